"""Climatology against brute force, and evaluate_checkpoint against the trainer's own test-split scores."""

from __future__ import annotations

import cftime
import numpy as np
import pytest
import torch

from data_io import DataConfig, prepare
from model.config import Config, ModelConfig, TrainConfig
from model.evaluate import calendar_months, evaluate_checkpoint
from model.metrics import climatology, denormalize, latitude_weights
from model.trainer import Trainer, fit


def brute_climatology(values: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    out = np.full((n_groups, *values.shape[1:]), np.nan)
    for g in range(n_groups):
        for cell in np.ndindex(values.shape[1:]):
            column = [values[(t, *cell)] for t in range(len(values)) if groups[t] == g]
            finite = [v for v in column if np.isfinite(v)]
            if finite:
                out[(g, *cell)] = sum(finite) / len(finite)
    return out


def test_climatology_matches_brute_force_with_nans_and_empty_groups():
    rng = np.random.default_rng(0)
    values = rng.normal(10.0, 3.0, (40, 2, 3, 4))
    values[rng.random(values.shape) < 0.2] = np.nan
    values[:, 1, 0, 0] = np.nan  # a cell with no finite value at all
    groups = rng.choice([0, 2, 3, 7, 11], size=40)  # months 2, 5, 6, 9, 11 (1-based) never occur
    got = climatology(values, groups, 12)
    np.testing.assert_allclose(got, brute_climatology(values, groups, 12), equal_nan=True)
    assert np.isnan(got[1]).all() and np.isnan(got[:, 1, 0, 0]).all()


def test_climatology_refuses_group_labels_out_of_range():
    with pytest.raises(ValueError, match="labels in 0..11"):
        climatology(np.zeros((3, 2)), np.array([0, 12, 1]), 12)


def test_calendar_months_of_datetime64_and_cftime_agree():
    stamps = ["2019-12-31T18", "2020-01-01T00", "2020-02-29T12", "2020-11-30T00"]
    times = np.array(stamps, dtype="datetime64[ns]")
    noleap = np.array([cftime.DatetimeNoLeap(2020, m, 1) for m in (12, 1, 2, 11)])
    assert calendar_months(times).tolist() == [12, 1, 2, 11] == calendar_months(noleap).tolist()


@pytest.fixture
def trained(demo_file, tmp_path):
    config = Config(
        data=DataConfig(data=str(demo_file), forecast_steps=2),
        model=ModelConfig(hidden_channels=[8]),
        train=TrainConfig(output_dir=str(tmp_path / "run"), num_epochs=1, num_workers=0, device="cpu"),
    )
    data = prepare(config.data)
    fit(config, data)
    return tmp_path / "run" / "best.pt", data, config


def test_model_and_persistence_scores_match_the_trainers_test_evaluation(trained):
    path, data, config = trained
    metrics = evaluate_checkpoint(path, data, device="cpu")
    config.train.resume = str(path)
    reference = Trainer(config, data, torch.device("cpu")).evaluate("test")
    precip = metrics["channels"]["precipitation"]
    np.testing.assert_allclose(precip["rmse"]["model"], reference["rmse_per_lead"], rtol=1e-4)
    np.testing.assert_allclose(precip["mae"]["model"], reference["mae_per_lead"], rtol=1e-4)
    np.testing.assert_allclose(precip["rmse"]["persistence"], reference["persistence_rmse_per_lead"], rtol=1e-4)
    assert metrics["windows"] == len(data.starts("test"))


def test_climatology_scores_match_a_brute_force_forecast(trained):
    path, data, config = trained
    metrics = evaluate_checkpoint(path, data, device="cpu")
    phys = denormalize(data.targets.astype("float64"), data.target_stats)[:, 0]  # (time, lat, lon)
    months = calendar_months(data.times)
    a, b = data.splits["train"]
    w = latitude_weights(data.lat)[:, None] * np.ones(phys.shape[1:])
    c = data.config
    for lead in range(c.forecast_steps):
        sse = weight = 0.0
        for start in data.starts("test"):
            t = start + c.window_size - 1 + c.target_offset + lead
            same_month = [i for i in range(a, b) if months[i] == months[t]] or list(range(a, b))
            forecast = phys[same_month].mean(axis=0)
            sse += float((w * (forecast - phys[t]) ** 2).sum())
            weight += float(w.sum())
        assert metrics["channels"]["precipitation"]["rmse"]["climatology"][lead] == pytest.approx(
            (sse / weight) ** 0.5, rel=1e-5)
