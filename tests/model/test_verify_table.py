"""The tidy verification table, its writers and its plots, on small synthetic forecasts."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from model import verify as v
from model import verify_plots as vp
from model import verify_table as vt

SHAPE = (24, 2, 6, 7)


def _ds(tp: np.ndarray, t2m: np.ndarray) -> xr.Dataset:
    dims = ("time", "lead", "lat", "lon")
    coords = {"time": pd.date_range("2021-06-01", periods=SHAPE[0], freq="12h"), "lead": [12, 24],
              "lat": np.linspace(20, 45, SHAPE[2]), "lon": np.linspace(100, 118, SHAPE[3])}
    return xr.Dataset({"tp": (dims, tp, {"units": "m"}), "t2m": (dims, t2m, {"units": "K"})}, coords=coords)


@pytest.fixture(scope="module")
def methods():
    rng = np.random.default_rng(4)
    tp = rng.gamma(0.5, 0.012, SHAPE)  # metres, as ERA5 writes it: thresholds in mm must be converted
    t2m = rng.normal(290, 4, SHAPE)
    truth = _ds(tp, t2m)
    truth["tp"][:, :, 0, 0] = np.nan
    base = _ds(tp + rng.normal(0, 0.008, SHAPE), t2m + rng.normal(0, 2, SHAPE))
    deep = _ds(tp + rng.normal(0, 0.002, SHAPE), t2m + rng.normal(0, 0.5, SHAPE))
    persistence = truth.shift(time=1).fillna(truth.mean("time"))
    climatology = truth.mean("time").broadcast_like(truth).transpose(*truth["tp"].dims)
    return truth, {"base": base, "deep": deep}, persistence, climatology


@pytest.fixture(scope="module")
def table(methods):
    truth, forecasts, persistence, climatology = methods
    return vt.score_table(forecasts, truth, persistence, climatology, thresholds=(1.0, 10.0), fss_windows=(1, 3),
                          n_boot=200)


def test_one_row_per_model_variable_lead_and_score(table):
    cat = 2 * (6 + 2)  # thresholds x (pod far sr csi ets fbias + two FSS windows)
    per_var = {"t2m": 5 + 2, "tp": 5 + 2 + cat}
    assert len(table) == 4 * 2 * sum(per_var.values())
    assert not table.duplicated(["model", "variable", "lead", "score"]).any()
    assert set(table.loc[table["variable"] == "t2m", "score"]).isdisjoint({"csi@10mm"})
    assert set(table["lead"]) == {12, 24}


def test_values_equal_the_single_scores_on_the_common_mask(methods, table):
    truth, forecasts, _, _ = methods
    o = truth["tp"]
    got = table.query("model == 'deep' and variable == 'tp' and score == 'csi@10mm'")["value"].to_numpy()
    np.testing.assert_allclose(got, v.categorical("csi", forecasts["deep"]["tp"], o, threshold=0.010))
    w = v.latitude_weights(truth["lat"])
    got = table.query("model == 'base' and variable == 't2m' and score == 'rmse'")["value"].to_numpy()
    np.testing.assert_allclose(got, v.rmse(forecasts["base"]["t2m"], truth["t2m"], weights=w))


def test_the_better_model_differs_significantly_and_references_have_no_difference(table):
    deep = table[table["model"] == "deep"]
    assert (deep["reference"] == "base").all()
    rmse = deep[deep["score"] == "rmse"]
    assert (rmse["difference"] < 0).all() and rmse["significant"].all()
    assert table.loc[table["model"].isin(["base", "persistence"]), "difference"].isna().all()
    skill = table.query("model == 'persistence' and score == 'rmse_skill_persistence'")["value"]
    np.testing.assert_allclose(skill, 0.0, atol=1e-12)


def test_identical_models_have_zero_differences(methods):
    truth, forecasts, persistence, climatology = methods
    same = {"a": forecasts["base"], "b": forecasts["base"].copy(deep=True)}
    t = vt.score_table(same, truth, persistence, climatology, thresholds=(1.0,), fss_windows=(3,), n_boot=50)
    b = t[t["model"] == "b"].dropna(subset=["difference"])
    assert len(b) > 0 and (b["difference"] == 0).all() and (b["low"] == 0).all() and (b["high"] == 0).all()
    assert not b["significant"].any()


def test_reserved_model_names_are_refused(methods):
    truth, forecasts, persistence, climatology = methods
    with pytest.raises(ValueError, match="persistence"):
        vt.score_table({"persistence": forecasts["base"]}, truth, persistence, climatology)


def test_forecasts_on_other_windows_or_without_the_variable_are_refused(methods):
    truth, forecasts, persistence, climatology = methods
    shifted = forecasts["base"].assign_coords(time=forecasts["base"]["time"] + np.timedelta64(12, "h"))
    with pytest.raises(ValueError, match="other 'time' values"):
        vt.score_table({"a": shifted}, truth, persistence, climatology)
    with pytest.raises(ValueError, match="has no variable 'tp'"):
        vt.score_table({"a": forecasts["base"][["t2m"]]}, truth, persistence, climatology)


def test_writers_produce_json_markdown_and_csv(table, tmp_path):
    paths = vt.write_metrics(table, tmp_path, {"split": "test", "windows": 24})
    assert [p.name for p in paths] == ["metrics.json", "metrics.md", "metrics.csv"]
    doc = json.loads(paths[0].read_text())
    assert doc["meta"]["split"] == "test" and len(doc["rows"]) == len(table)
    md = paths[1].read_text()
    assert md.count("### ") == 2 * 2 and "### tp, lead 24" in md and "| csi@10mm |" in md
    assert "deep − base [95%]" in md and "*" in md
    assert len(pd.read_csv(paths[2])) == len(table)


@pytest.mark.parametrize("fmt", ["png", "pdf"])
def test_every_plot_renders_to_a_non_trivial_file(methods, table, tmp_path, fmt):
    truth, forecasts, _, _ = methods
    paths = vp.plot_skill_vs_lead(table, tmp_path, fmt=fmt, dpi=40)
    paths += vp.plot_performance_diagrams(table, tmp_path, fmt=fmt, dpi=40)
    paths += vp.plot_case_maps(truth["tp"], {m: f["tp"] for m, f in forecasts.items()}, [0, 5], tmp_path,
                               fmt=fmt, dpi=40)
    paths += vp.plot_case_maps(truth["t2m"], {}, [1], tmp_path, fmt=fmt, dpi=40)  # truth alone still draws
    names = {p.name for p in paths}
    assert {f"skill_tp.{fmt}", f"skill_t2m.{fmt}", f"performance_tp_1mm.{fmt}", f"performance_tp_10mm.{fmt}",
            f"case_tp_0.{fmt}", f"case_tp_5.{fmt}", f"case_t2m_1.{fmt}"} == names
    assert all(p.exists() and p.stat().st_size > 5000 for p in paths)


def test_a_bad_format_or_case_names_the_flag(table, tmp_path, methods):
    with pytest.raises(ValueError, match="--format"):
        vp.plot_skill_vs_lead(table, tmp_path, fmt="jpg")
    with pytest.raises(ValueError, match="outside"):
        vp.plot_case_maps(methods[0]["tp"], {}, [99], tmp_path)


def test_a_regional_grid_with_two_d_latitude_is_weighted_by_it(methods):
    truth, forecasts, persistence, climatology = methods
    lat2 = xr.DataArray(np.add.outer(np.linspace(20, 45, SHAPE[2]), np.linspace(0, 6, SHAPE[3])), dims=("y", "x"))

    def regional(ds):
        return ds[["t2m"]].drop_vars(["lat", "lon"]).rename(lat="y", lon="x").assign_coords(lat=lat2)

    t = vt.score_table({"base": regional(forecasts["base"])}, regional(truth), regional(persistence),
                       regional(climatology), n_boot=20)
    got = t.query("model == 'base' and score == 'rmse'")["value"].to_numpy()
    w = v.latitude_weights(lat2)
    err2 = (regional(forecasts["base"])["t2m"] - regional(truth)["t2m"]) ** 2
    np.testing.assert_allclose(got, np.sqrt((err2 * w).sum(["time", "y", "x"]) / (w.sum() * SHAPE[0])), rtol=1e-12)


@pytest.mark.parametrize("metric,label", [("csi@10", "csi@10mm"), ("fss@1mm/3", "fss@1mm/3"), ("rmse", "rmse"),
                                          ("rmse_skill_persistence", "rmse_skill_persistence"), ("acc", "acc")])
def test_validation_score_is_the_tables_value(methods, table, metric, label):
    truth, forecasts, persistence, climatology = methods
    for j, lead in enumerate(truth["lead"].values):
        def one(ds, j=j):
            return ds["tp"].isel(lead=[j])
        got = vt.validation_score(metric, one(forecasts["deep"]), one(truth), persistence=one(persistence),
                                  climatology=one(climatology))
        want = table.query(f"model == 'deep' and variable == 'tp' and score == '{label}' and lead == {lead}")
        np.testing.assert_allclose(got, want["value"].item(), rtol=1e-10)


def test_validation_score_refuses_unknown_or_incomplete_metrics(methods):
    truth, forecasts, _, _ = methods
    for bad in ("csi", "csi@ten", "rmse@1", "fss@1", "wind"):
        with pytest.raises(ValueError, match="is not a score; use one of"):
            vt.validation_score(bad, forecasts["deep"]["tp"], truth["tp"])
    with pytest.raises(ValueError, match="needs the persistence"):
        vt.validation_score("rmse_skill_persistence", forecasts["deep"]["tp"], truth["tp"])
    assert vt.higher_is_better("csi@10") and not vt.higher_is_better("rmse") and vt.higher_is_better("fss@1/3")
