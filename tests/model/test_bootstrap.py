"""The block bootstrap of score differences: contiguous blocks, zero-width intervals for identical models."""

from __future__ import annotations

import cftime
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from model import verify as v
from model._bootstrap import block_indices, block_length, paired_difference


def test_block_length_converts_days_to_windows_of_the_time_step():
    six_hourly = pd.date_range("2020-01-01", periods=30, freq="6h").values
    assert block_length(six_hourly, 5) == 20
    daily = np.array([cftime.DatetimeNoLeap(2001, 1, d) for d in range(1, 11)])
    assert block_length(daily, 3) == 3
    assert block_length(six_hourly, 0.1) == 1
    with pytest.raises(ValueError, match="positive"):
        block_length(six_hourly, 0)


@pytest.mark.parametrize("n, block", [(50, 7), (20, 1), (9, 9), (5, 12)])
def test_block_indices_are_contiguous_runs_that_fit_in_the_period(n, block):
    idx = block_indices(n, block, 200, np.random.default_rng(3))
    assert idx.shape == (200, n) and idx.min() >= 0 and idx.max() < n
    b = min(block, n)
    for row in idx:
        for k in range(0, n, b):
            run = row[k:k + b]
            np.testing.assert_array_equal(run, run[0] + np.arange(len(run)))  # contiguous, never wrapping
            assert run[0] <= n - b
    if b == n:
        np.testing.assert_array_equal(idx, np.broadcast_to(np.arange(n), idx.shape))


def test_block_indices_reach_every_start_and_are_reproducible():
    a = block_indices(30, 5, 500, np.random.default_rng(0))
    np.testing.assert_array_equal(a, block_indices(30, 5, 500, np.random.default_rng(0)))
    assert set(a[:, ::5].ravel()) == set(range(26))


def _fields(seed: int, n_time: int = 60, noise: float = 1.0):
    rng = np.random.default_rng(seed)
    truth = rng.normal(0, 3, (n_time, 2, 4, 5))
    err = rng.normal(0, noise, truth.shape)
    dims = ("time", "lead", "lat", "lon")
    return xr.DataArray(truth, dims=dims), xr.DataArray(truth + err, dims=dims)


def _rmse_parts(fc, truth):
    return v.parts_of("rmse", fc, truth, preserve_dims=("time", "lead"))


def _finish(p):
    return v.finish("rmse", p)


def test_identical_models_give_a_zero_width_interval_that_covers_zero():
    truth, fc = _fields(0)
    d = paired_difference(_rmse_parts(fc, truth), _rmse_parts(fc.copy(), truth), _finish, block=5, n_boot=300)
    for x in (d.difference, d.low, d.high):
        np.testing.assert_array_equal(x, 0.0)
    assert not d.significant.any()


def test_a_clearly_better_model_is_significant_and_the_difference_is_b_minus_a():
    truth, bad = _fields(0, noise=2.0)
    good = truth + 0.5 * (bad - truth)
    d = paired_difference(_rmse_parts(bad, truth), _rmse_parts(good, truth), _finish, block=5, n_boot=300)
    np.testing.assert_allclose(d.difference, v.rmse(good, truth) - v.rmse(bad, truth))
    assert bool(d.significant.all()) and bool((d.high < 0).all()) and bool((d.low <= d.difference).all())


def _ar1(rng, n, phi):
    x = np.zeros(n)
    for t in range(1, n):
        x[t] = phi * x[t - 1] + np.sqrt(1 - phi**2) * rng.normal()
    return x


def test_blocks_widen_the_interval_when_errors_are_autocorrelated():
    rng = np.random.default_rng(1)
    truth, _ = _fields(1, n_time=200)
    # Each model's error size drifts slowly (weather regimes), so per-window score differences are correlated.
    fcs = [truth + np.exp(_ar1(rng, 200, 0.95))[:, None, None, None] * rng.normal(0, 1, truth.shape) for _ in "ab"]
    pa, pb = (_rmse_parts(fc, truth) for fc in fcs)
    narrow = paired_difference(pa, pb, _finish, block=1, n_boot=400, seed=1)
    wide = paired_difference(pa, pb, _finish, block=20, n_boot=400, seed=1)
    assert float((wide.high - wide.low).mean()) > 1.5 * float((narrow.high - narrow.low).mean())


def test_models_scored_on_different_windows_are_refused():
    truth, fc = _fields(0)
    with pytest.raises(ValueError, match="same windows"):
        paired_difference(_rmse_parts(fc, truth), _rmse_parts(fc[:-1], truth[:-1]), _finish, block=2)
