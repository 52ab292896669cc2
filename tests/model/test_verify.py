"""Every score in model.verify against a brute-force loop over cells, with latitude weights and NaN truth."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scores
import scores.spatial
import xarray as xr

from model import verify as v

LAT = np.array([-30.0, 0.0, 20.0, 45.0, 60.0])
SHAPE = (4, 2, 5, 6)  # time, lead, lat, lon


def _da(a: np.ndarray, lat=LAT) -> xr.DataArray:
    return xr.DataArray(a, dims=("time", "lead", "lat", "lon"),
                        coords={"lat": lat, "lon": np.arange(a.shape[-1]) * 1.0, "lead": [6, 12]})


@pytest.fixture
def pair():
    rng = np.random.default_rng(1)
    truth = rng.gamma(0.6, 6.0, SHAPE)
    fc = np.clip(truth + rng.normal(0, 4.0, SHAPE), 0, None)
    truth[:, :, 1, 2] = np.nan  # a land cell
    truth[2, 0] = np.nan  # a missing field
    return _da(fc), _da(truth)


def _cells(truth: np.ndarray, lead: int):
    """(time, lat, lon) of every finite truth cell of one lead."""
    for t, i, j in itertools.product(range(SHAPE[0]), range(SHAPE[2]), range(SHAPE[3])):
        if np.isfinite(truth[t, lead, i, j]):
            yield t, i, j


def _wmean(values, weights):
    return sum(w * x for w, x in zip(weights, values)) / sum(weights)


def test_latitude_weights_are_cosine_with_mean_one_over_rows_or_cells():
    w1 = v.latitude_weights(xr.DataArray(LAT, dims="lat"))
    np.testing.assert_allclose(w1, np.cos(np.deg2rad(LAT)) / np.cos(np.deg2rad(LAT)).mean())
    lat2 = xr.DataArray(np.add.outer(LAT, [0.0, 1.0, 3.0]), dims=("y", "x"))
    w2 = v.latitude_weights(lat2)
    assert w2.dims == ("y", "x") and float(w2.mean()) == pytest.approx(1.0)
    np.testing.assert_allclose(w2, np.cos(np.deg2rad(lat2)) / np.cos(np.deg2rad(lat2)).mean())


@pytest.mark.parametrize("name, err", [("rmse", lambda d: d * d), ("mae", abs), ("bias", lambda d: d)])
def test_weighted_mean_scores_match_a_loop_over_finite_cells(pair, name, err):
    fc, truth = pair
    w = v.latitude_weights(truth["lat"])
    got = getattr(v, name)(fc, truth, weights=w)
    f, o, ww = fc.values, truth.values, w.values
    for lead in range(2):
        cells = list(_cells(o, lead))
        expect = _wmean([err(f[t, lead, i, j] - o[t, lead, i, j]) for t, i, j in cells], [ww[i] for _, i, _ in cells])
        expect = np.sqrt(expect) if name == "rmse" else expect
        assert float(got.sel(lead=[6, 12][lead])) == pytest.approx(expect, rel=1e-10)


def test_rmse_equals_scores_rmse_and_weights_matter(pair):
    fc, truth = pair
    w = v.latitude_weights(truth["lat"])
    np.testing.assert_allclose(v.rmse(fc, truth, weights=w), scores.continuous.rmse(fc, truth, weights=w,
                                                                                    preserve_dims=["lead"]))
    assert not np.allclose(v.rmse(fc, truth, weights=w), v.rmse(fc, truth))


def test_two_d_latitude_weights_a_regional_grid(pair):
    fc, truth = (x.drop_vars(["lat", "lon"]).rename(lat="y", lon="x") for x in pair)
    lat2 = xr.DataArray(np.add.outer(LAT, np.linspace(0, 10, SHAPE[3])), dims=("y", "x"))
    w = v.latitude_weights(lat2)
    got = v.rmse(fc.assign_coords(lat=lat2), truth.assign_coords(lat=lat2), weights=w)
    f, o = fc.values, truth.values
    cells = list(_cells(o, 1))
    expect = np.sqrt(_wmean([(f[t, 1, i, j] - o[t, 1, i, j]) ** 2 for t, i, j in cells],
                            [w.values[i, j] for _, i, j in cells]))
    assert float(got.isel(lead=1)) == pytest.approx(expect, rel=1e-10)


def _pearson(x, y, w):
    mx, my = _wmean(x, w), _wmean(y, w)
    cov = _wmean([(a - mx) * (b - my) for a, b in zip(x, y)], w)
    return cov / np.sqrt(_wmean([(a - mx) ** 2 for a in x], w) * _wmean([(b - my) ** 2 for b in y], w))


def test_correlation_and_acc_match_weighted_loops(pair):
    fc, truth = pair
    w = v.latitude_weights(truth["lat"])
    clim = truth.mean("time") + 0.5
    corr, acc = v.correlation(fc, truth, weights=w), v.acc(fc, truth, climatology=clim, weights=w)
    f, o, c = fc.values, truth.values, clim.values
    for lead in range(2):
        cells = list(_cells(o, lead))
        ws = [w.values[i] for _, i, _ in cells]
        x = [f[t, lead, i, j] for t, i, j in cells]
        y = [o[t, lead, i, j] for t, i, j in cells]
        assert float(corr.isel(lead=lead)) == pytest.approx(_pearson(x, y, ws), rel=1e-9)
        fa = [f[t, lead, i, j] - c[lead, i, j] for t, i, j in cells]
        oa = [o[t, lead, i, j] - c[lead, i, j] for t, i, j in cells]
        expect = sum(q * a * b for q, a, b in zip(ws, fa, oa)) / np.sqrt(
            sum(q * a * a for q, a in zip(ws, fa)) * sum(q * b * b for q, b in zip(ws, oa)))
        assert float(acc.isel(lead=lead)) == pytest.approx(expect, rel=1e-9)


@pytest.mark.parametrize("threshold", [0.1, 1.0, 10.0])
def test_categorical_scores_match_counted_contingency_tables(pair, threshold):
    fc, truth = pair
    f, o = fc.values, truth.values
    for lead in range(2):
        h = fa = m = cn = 0
        for t, i, j in _cells(o, lead):
            fe, oe = f[t, lead, i, j] >= threshold, o[t, lead, i, j] >= threshold
            h, fa, m, cn = h + (fe and oe), fa + (fe and not oe), m + (oe and not fe), cn + (not fe and not oe)
        n = h + fa + m + cn
        random_hits = (h + m) * (h + fa) / n
        expect = {"pod": h / (h + m), "far": fa / (h + fa), "sr": h / (h + fa), "csi": h / (h + m + fa),
                  "ets": (h - random_hits) / (h + m + fa - random_hits), "fbias": (h + fa) / (h + m)}
        for name, value in expect.items():
            got = v.categorical(name, fc, truth, threshold=threshold).isel(lead=lead)
            assert float(got) == pytest.approx(value, rel=1e-12), name


def _fss_loop(f, o, threshold, n):
    """Fractions over every whole n x n window of every field, pooled: 1 - sum (pf-po)^2 / sum (pf^2 + po^2)."""
    diff = power = 0.0
    for field in range(f.shape[0]):
        fe, oe = f[field] >= threshold, o[field] >= threshold
        for i in range(f.shape[1] - n + 1):
            for j in range(f.shape[2] - n + 1):
                pf, po = fe[i:i + n, j:j + n].mean(), oe[i:i + n, j:j + n].mean()
                diff, power = diff + (pf - po) ** 2, power + pf**2 + po**2
    return 1 - diff / power


@pytest.mark.parametrize("threshold, window", [(1.0, 1), (1.0, 3), (10.0, 3), (5.0, 5)])
def test_fss_matches_a_window_loop_and_scores_fss_2d(pair, threshold, window):
    fc, truth = pair
    truth = truth.fillna(0.0)  # scores' fss_2d has no mask; the masked case is tested below
    got = v.fss(fc, truth, threshold=threshold, window=window)
    ref = scores.spatial.fss_2d(fc, truth, event_threshold=threshold, window_size=(window, window),
                                spatial_dims=("lat", "lon"), preserve_dims=["lead"],
                                threshold_operator=np.greater_equal)
    np.testing.assert_allclose(got, ref, rtol=1e-12)
    for lead in range(2):
        expect = _fss_loop(fc.values[:, lead], truth.values[:, lead], threshold, window)
        assert float(got.isel(lead=lead)) == pytest.approx(expect, rel=1e-12)


def test_fss_masks_nan_truth_as_no_event_in_both_fields(pair):
    fc, truth = pair
    got = v.fss(fc, truth, threshold=1.0, window=3)
    masked_fc = fc.where(truth.notnull(), -1.0).values
    expect = _fss_loop(masked_fc[:, 1], truth.fillna(-1.0).values[:, 1], 1.0, 3)
    assert float(got.isel(lead=1)) == pytest.approx(expect, rel=1e-12)


def test_nan_truth_is_masked_not_scored(pair):
    fc, truth = pair
    wild = fc.where(truth.notnull(), 1e9)  # forecasts where the truth is missing must not count
    for name in ("rmse", "mae", "bias", "corr"):
        np.testing.assert_allclose(v.score(name, wild, truth), v.score(name, fc, truth), rtol=1e-12)
    np.testing.assert_allclose(v.categorical("csi", wild, truth, threshold=1.0),
                               v.categorical("csi", fc, truth, threshold=1.0))


def test_rmse_skill_is_one_minus_the_ratio_and_zero_for_the_reference(pair):
    fc, truth = pair
    ref = truth.shift(time=1)
    got = v.rmse_skill(fc, truth, reference=ref)
    ok = ref.notnull()
    expect = 1 - v.rmse(fc.where(ok), truth) / v.rmse(ref, truth)
    np.testing.assert_allclose(got, expect, rtol=1e-12)
    np.testing.assert_allclose(v.rmse_skill(ref, truth, reference=ref), 0.0, atol=1e-12)


def test_parts_summed_over_time_give_the_pooled_score(pair):
    fc, truth = pair
    for name, kw in (("rmse", {}), ("corr", {}), ("csi", {"threshold": 1.0}), ("fss", {"threshold": 1.0, "window": 3})):
        per_time = v.parts_of(name, fc, truth, preserve_dims=("time", "lead"), **kw)
        assert per_time.sizes["time"] == SHAPE[0]
        np.testing.assert_allclose(v.finish(name, per_time.sum("time")), v.score(name, fc, truth, **kw), rtol=1e-12)


def test_no_preserved_dim_gives_one_number(pair):
    fc, truth = pair
    assert v.rmse(fc, truth, preserve_dims=()).ndim == 0


def test_a_score_missing_its_argument_names_it(pair):
    with pytest.raises(ValueError, match="threshold"):
        v.score("csi", *pair)
    with pytest.raises(ValueError, match="larger than the grid"):
        v.fss(*pair, threshold=1.0, window=7)
