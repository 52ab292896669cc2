"""Retrained checkpoints side by side on the test split: the verification table and the verdict against the baseline.

`score_on_test` is the one call that turns checkpoints into model.verify_table's tidy table (RMSE, CSI, ...,
each later model's difference from the first with a block-bootstrap interval); `verdict` reads the pick's RMSE
and CSI at 10 mm against the baseline from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import xarray as xr

from data_io import PreparedData
from model import evaluate as ev
from model.verify import FSS_WINDOWS
from model.verify_table import score_table

HEADLINE = (("rmse", "RMSE", False), ("csi@10mm", "CSI at 10 mm", True))  # (score, label, higher is better)


def _datasets(path: Path, data: PreparedData, device: str) -> tuple[xr.Dataset, xr.Dataset, xr.Dataset, xr.Dataset]:
    """(forecast, truth, persistence, climatology) of the test split in physical units, dims (time, lead, lat, lon);
    time is each window's initial time."""
    loaded = ev.load_for_evaluation(path, data, device)
    starts = data.starts("test")
    clim, _ = ev.monthly_climatology(data)
    months = ev.calendar_months(data.times) - 1
    parts: dict[str, list[np.ndarray]] = {"forecast": [], "truth": [], "persistence": [], "climatology": []}
    scorer = ev.scorer(loaded)
    for idx, pred_z, batch in ev.forecasts(loaded, starts, loaded.config.train.batch_size):
        pred, truth, persist = scorer.physical(pred_z, batch)
        clim_fc = torch.as_tensor(clim[months[ev._valid_indices(idx, data)]], dtype=torch.float32)
        for name, t in zip(parts, (pred, truth, persist, clim_fc)):
            parts[name].append(t.numpy())
    init = data.times[starts + data.config.window_size - 1]
    hours = ev._step_hours(data.times) or 1.0
    leads = [(data.config.target_offset + j) * hours for j in range(data.config.forecast_steps)]
    coords = {"time": init, "lead": leads, "lat": np.asarray(data.lat), "lon": np.asarray(data.lon)}

    def dataset(arrays: list[np.ndarray]) -> xr.Dataset:
        a = np.concatenate(arrays)  # (window, lead, channel, lat, lon)
        return xr.Dataset({
            name: (("time", "lead", "lat", "lon"), a[:, :, k],
                   {"units": data.target_attrs.get(name.split("@")[0], {}).get("units", "")})
            for k, name in enumerate(data.target_channels)
        }, coords=coords)

    return tuple(dataset(parts[n]) for n in parts)  # type: ignore[return-value]


def score_on_test(checkpoints: Mapping[str, Path], data: PreparedData, device: str = "cpu",
                  n_boot: int = 1000) -> pd.DataFrame:
    """score_table of every checkpoint (the first is the reference of the differences), persistence and
    climatology on the test split of `data` (the data every checkpoint was trained on)."""
    forecasts, refs = {}, None
    for name, path in checkpoints.items():
        forecast, truth, persistence, climatology = _datasets(Path(path), data, device)
        forecasts[name] = forecast
        refs = refs or (truth, persistence, climatology)
    truth = refs[0]
    # FSS windows that fit the grid (a small test region has fewer cells than the widest default window).
    windows = tuple(w for w in FSS_WINDOWS if w <= min(truth.sizes["lat"], truth.sizes["lon"])) or (1,)
    return score_table(forecasts, *refs, fss_windows=windows, n_boot=n_boot)


def headline(table: pd.DataFrame, model: str) -> dict[str, dict]:
    """{score: {value, reference_value, difference, low, high, significant}} of `model` against the table's first
    model, pooled as the table gives them (the first target variable, every lead: mean over leads)."""
    out = {}
    var = table["variable"].iloc[0]
    for score, _, _ in HEADLINE:
        rows = table[(table["variable"] == var) & (table["score"] == score)]
        if rows.empty:
            continue
        mine = rows[rows["model"] == model]
        ref = rows[rows["model"] == rows["model"].iloc[0]]
        entry = {"value": float(mine["value"].mean()), "reference_value": float(ref["value"].mean())}
        if "difference" in mine and mine["difference"].notna().all():
            entry.update(difference=float(mine["difference"].mean()), low=float(mine["low"].mean()),
                         high=float(mine["high"].mean()), significant=bool(mine["significant"].all()),
                         per_lead=mine[["lead", "value", "difference", "low", "high"]].to_dict("records"))
        out[score] = entry
    return out


def verdict(table: pd.DataFrame, picked: str, baseline: str) -> list[str]:
    """Lines saying whether the pick beat the baseline on the test split, by how much, with the 95% interval."""
    if picked == baseline:
        return [f"The baseline {baseline} was picked: no retrained search trial beat it on validation."]
    lines = []
    for score, label, higher in HEADLINE:
        h = headline(table, picked).get(score)
        if h is None or "difference" not in h:
            continue
        better = h["difference"] > 0 if higher else h["difference"] < 0
        sure = "outside the interval" if h["significant"] else "within the interval: not a sure difference"
        lines.append(f"{label}: {picked} {h['value']:.4g} vs baseline {baseline} {h['reference_value']:.4g}; "
                     f"difference {h['difference']:+.4g} [95% {h['low']:+.3g}, {h['high']:+.3g}]: "
                     f"{'better' if better else 'worse'}, {sure}.")
    return lines or [f"No RMSE / CSI at 10 mm rows to compare {picked} with {baseline}."]
