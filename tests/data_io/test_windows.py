"""Chronological splits: no window straddles a boundary, and statistics come from the train split alone."""

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from data_io import DataConfig, DataError, prepare, window_span, window_starts
from data_io.windows import split_bounds


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(20, 400),
    train=st.floats(0.3, 0.8),
    val=st.floats(0.05, 0.19),
    window=st.integers(1, 6),
    offset=st.integers(1, 3),
    steps=st.integers(1, 3),
)
def test_windows_never_straddle_a_split(n, train, val, window, offset, steps):
    cfg = DataConfig(train_ratio=train, val_ratio=val, window_size=window, target_offset=offset, forecast_steps=steps)
    times = pd.date_range("2000-01-01", periods=n, freq="D").values
    try:
        bounds = split_bounds(times, cfg, "f.nc")
    except DataError:
        return  # a split too short for one window is reported, not silently emptied
    assert bounds["train"][0] == 0 and bounds["test"][1] == n
    assert bounds["train"][1] == bounds["val"][0] and bounds["val"][1] == bounds["test"][0]
    span = window_span(cfg)
    for name in ("train", "val", "test"):
        start, stop = bounds[name]
        starts = window_starts(bounds[name], cfg)
        # Every time index a window touches, inputs through the last forecast step, lies inside its split.
        assert np.all(starts >= start) and np.all(starts + span <= stop)
        # And no window that would fit is left out.
        assert len(starts) == max(0, stop - start - span + 1)
    assert len(window_starts(bounds["train"], cfg)) >= 1 and len(window_starts(bounds["val"], cfg)) >= 1


def test_window_span_counts_inputs_offset_and_leads():
    assert window_span(DataConfig(window_size=6, target_offset=1, forecast_steps=1)) == 7
    assert window_span(DataConfig(window_size=6, target_offset=2, forecast_steps=3)) == 10


def test_test_start_date_splits_by_date():
    times = pd.date_range("2000-01-01", periods=100, freq="D").values
    cfg = DataConfig(test_start_date="2000-03-01", train_ratio=0.7, val_ratio=0.15)
    bounds = split_bounds(times, cfg, "f.nc")
    assert bounds["test"] == (60, 100)
    assert bounds["train"][1] == round(60 * 0.7 / 0.85)


def test_fewer_steps_than_a_window_needs_is_an_error():
    times = pd.date_range("2000-01-01", periods=20, freq="D").values
    with pytest.raises(DataError, match="the val split has 3 time steps but one window needs 7"):
        split_bounds(times, DataConfig(), "f.nc")


def test_normalisation_statistics_come_from_the_train_split_only(tmp_path):
    """A trend makes leakage visible: stats over the whole record would differ from train-only ones."""
    rng = np.random.default_rng(1)
    n = 80
    trend = np.linspace(0, 50, n)[:, None, None]
    temp = (280 + trend + rng.standard_normal((n, 3, 4))).astype("float32")
    rain = rng.gamma(0.5, 4.0, (n, 3, 4)).astype("float32") * (1 + np.arange(n)[:, None, None] / 10)
    rain[rng.random(rain.shape) < 0.3] = 0.0
    ds = xr.Dataset(
        {"temp": (("time", "lat", "lon"), temp), "precipitation": (("time", "lat", "lon"), rain)},
        coords={"time": pd.date_range("2000-01-01", periods=n, freq="D"), "lat": [0.0, 1.0, 2.0],
                "lon": [10.0, 11.0, 12.0, 13.0]},
    )
    path = tmp_path / "trend.nc"
    ds.to_netcdf(path)
    d = prepare(DataConfig(data=str(path), window_size=3))
    stop = d.splits["train"][1]
    assert stop == round(n * 0.7)

    train_temp = temp[:stop].astype("float64")
    train_rain = np.log1p(rain[:stop].astype("float64"))
    s = d.input_stats
    assert d.channels == ["temp", "precipitation"] and list(s.log) == [False, True]
    np.testing.assert_allclose(s.mean, [train_temp.mean(), train_rain.mean()], rtol=1e-6)
    np.testing.assert_allclose(s.std, [train_temp.std(), train_rain.std()], rtol=1e-6)
    assert abs(s.mean[0] - temp.mean()) > 1.0, "the whole-record mean is far from the train mean"
    # The target is precipitation: same statistics, and its z-scores are those of the train-fitted stats.
    np.testing.assert_allclose(d.target_stats.mean, [train_rain.mean()], rtol=1e-6)
    expected = (np.log1p(rain.astype("float64")) - train_rain.mean()) / train_rain.std()
    np.testing.assert_allclose(d.targets[:, 0], expected, rtol=1e-5, atol=1e-5)
