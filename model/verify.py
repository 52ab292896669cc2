"""Forecast verification on xarray with named dims, weatherbench2 style, on top of the `scores` package.

Every score is a pair: `parts` turns (forecast, truth) into additive sums kept per `preserve_dims`, and `finish`
turns summed parts into the score. Summing the parts over time and finishing gives the headline number; the block
bootstrap (model._bootstrap) resamples the per-time parts instead of the fields, so an interval over a thousand
replicates costs a thousand sums of small arrays, not a thousand passes over the grid.

Conventions: dims `time` (forecast initialisation / test window) and `lead`; the last two dims are the spatial
ones, and the `lat` coordinate (1-D over one of them, or 2-D over both for a regional grid) gives the weights.
Continuous scores are latitude-weighted; contingency counts and FSS count grid cells, as forecasters do.
A point counts where both the forecast and the truth are finite (NaN truth is masked everywhere).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import xarray as xr
from scores.categorical import BasicContingencyManager
from scores.continuous import additive_bias
from scores.continuous import mae as _scores_mae
from scores.continuous import mse as _scores_mse

from model._fss import fss_parts

TIME, LEAD = "time", "lead"
Dims = Sequence[str]
Weights = xr.DataArray | None
RAIN_THRESHOLDS_MM = (0.1, 1.0, 10.0, 25.0, 50.0)
FSS_WINDOWS = (1, 5, 11)


def latitude_weights(lat: xr.DataArray) -> xr.DataArray:
    """cos(latitude) over the latitude coordinate's own dims (1-D rows or 2-D cells), normalised to mean 1."""
    w = np.cos(np.deg2rad(lat.astype("float64")))
    return (w / w.mean()).drop_vars(list(lat.coords), errors="ignore").rename("latitude_weight")


def spatial_dims(da: xr.DataArray) -> tuple[str, str]:
    """The last two dims, which hold the grid in every array this project writes."""
    if da.ndim < 2:
        raise ValueError(f"a field needs two spatial dims last, but got dims {da.dims}")
    return da.dims[-2], da.dims[-1]


def _keep(da: xr.DataArray, preserve_dims: Sequence[str]) -> list[str]:
    return [d for d in preserve_dims if d in da.dims]


def _reduce(da: xr.DataArray, preserve_dims: Sequence[str]) -> list[str]:
    return [d for d in da.dims if d not in preserve_dims]


def _weights(truth: xr.DataArray, weights: xr.DataArray | None) -> xr.DataArray:
    return xr.ones_like(truth.isel({d: 0 for d in truth.dims[:-2]}, drop=True)) if weights is None else weights


def _valid(forecast: xr.DataArray, truth: xr.DataArray) -> xr.DataArray:
    return forecast.notnull() & truth.notnull()


def _weight_sum(forecast: xr.DataArray, truth: xr.DataArray, weights: Weights, keep: Dims) -> xr.DataArray:
    w, ok = xr.broadcast(_weights(truth, weights), _valid(forecast, truth))
    return (w * ok).sum(_reduce(ok, keep))


def _masked(forecast: xr.DataArray, truth: xr.DataArray) -> tuple[xr.DataArray, xr.DataArray]:
    ok = _valid(forecast, truth)
    return forecast.where(ok), truth.where(ok)


# --- parts: additive sums per preserved dim ---------------------------------------------------------------------

def _mean_parts(scores_fn: Callable, name: str) -> Callable:
    """Parts of a `scores` weighted mean: (mean * weight sum, weight sum), so means pool over time exactly."""

    def parts(forecast: xr.DataArray, truth: xr.DataArray, weights: Weights = None,
              preserve_dims: Dims = (LEAD,)) -> xr.Dataset:
        f, o = _masked(forecast, truth)
        keep = _keep(o, preserve_dims)
        w_sum = _weight_sum(f, o, weights, keep)
        mean = scores_fn(f, o, preserve_dims=keep or None, reduce_dims=None if keep else "all",
                         weights=_weights(o, weights))
        return xr.Dataset({name: (mean * w_sum).where(w_sum > 0, 0.0), "w": w_sum})

    return parts


se_parts = _mean_parts(_scores_mse, "se")
ae_parts = _mean_parts(_scores_mae, "ae")
error_parts = _mean_parts(additive_bias, "e")


def moment_parts(forecast: xr.DataArray, truth: xr.DataArray, weights: Weights = None, preserve_dims: Dims = (LEAD,),
                 climatology: xr.DataArray | None = None) -> xr.Dataset:
    """Weighted first and second moments of forecast and truth (anomalies from `climatology` when given).

    `scores` has only an unweighted, unpooled Pearson correlation, so the moments are summed here.
    """
    f, o = _masked(forecast, truth)
    if climatology is not None:
        f, o = f - climatology, o - climatology
        f, o = _masked(f, o)
    w = _weights(o, weights)
    keep = _keep(o, preserve_dims)
    red = _reduce(o, keep)

    def wsum(x):
        return (w * x).sum(red)

    return xr.Dataset({"w": _weight_sum(f, o, weights, keep), "f": wsum(f), "o": wsum(o),
                       "ff": wsum(f * f), "oo": wsum(o * o), "fo": wsum(f * o)})


def contingency_counts(forecast: xr.DataArray, truth: xr.DataArray, thresholds: Sequence[float],
                       preserve_dims: Dims = (LEAD,)) -> xr.Dataset:
    """Counts of the events `value >= threshold` for every threshold in one pass, dim `threshold` (by position).

    Named as `scores`' contingency tables (tp, tn, fp, fn, total counts), so its formulas finish them; counted
    here because its table is built one threshold at a time over the full fields.
    """
    ok = _valid(forecast, truth)
    keep = _keep(truth, preserve_dims)
    red = _reduce(ok, keep)
    t = xr.DataArray(np.asarray(thresholds, dtype="float64"), dims="threshold")
    f_event = (forecast >= t) & ok
    o_event = (truth >= t) & ok
    hits = (f_event & o_event).sum(red)
    f_n, o_n, total = f_event.sum(red), o_event.sum(red), ok.sum(red)
    counts = {"tp_count": hits, "fp_count": f_n - hits, "fn_count": o_n - hits,
              "tn_count": total - f_n - o_n + hits, "total_count": total.broadcast_like(hits)}
    return xr.Dataset({k: c.astype("float64").transpose(*keep, "threshold") for k, c in counts.items()})


def contingency_parts(forecast: xr.DataArray, truth: xr.DataArray, weights: Weights = None,
                      preserve_dims: Dims = (LEAD,), threshold: float = 1.0) -> xr.Dataset:
    """Hit / false alarm / miss / correct negative counts of the event `value >= threshold` (scores' names)."""
    del weights  # contingency tables count cells
    return contingency_counts(forecast, truth, [threshold], preserve_dims).isel(threshold=0)


# --- finishes: summed parts -> score ----------------------------------------------------------------------------

def _ratio(a: xr.DataArray, b: xr.DataArray) -> xr.DataArray:
    return (a / b.where(b > 0)).drop_vars("contingency", errors="ignore")


def _table(p: xr.Dataset) -> BasicContingencyManager:
    return BasicContingencyManager({k: p[k] for k in ("tp_count", "tn_count", "fp_count", "fn_count", "total_count")})


def _correlation(p: xr.Dataset) -> xr.DataArray:
    w = p["w"].where(p["w"] > 0)
    cov = p["fo"] / w - p["f"] * p["o"] / w**2
    var_f, var_o = p["ff"] / w - (p["f"] / w) ** 2, p["oo"] / w - (p["o"] / w) ** 2
    return cov / np.sqrt(var_f * var_o).where(var_f * var_o > 0)


def _acc(p: xr.Dataset) -> xr.DataArray:
    """Uncentred anomaly correlation (weatherbench2's ACC), pooled over the summed dims."""
    denom = p["ff"] * p["oo"]
    return p["fo"] / np.sqrt(denom).where(denom > 0)


def _fss(p: xr.Dataset) -> xr.DataArray:
    denom = p["fcst"] + p["obs"]
    return (1 - p["diff"] / denom.where(denom > 0)).clip(0.0, 1.0)


@dataclass(frozen=True)
class Score:
    """A score as additive parts and a finish; `kind` picks the extra argument parts need (see `parts_of`)."""

    parts: Callable[..., xr.Dataset]
    finish: Callable[[xr.Dataset], xr.DataArray]
    kind: str = "continuous"  # continuous | anomaly | event | fss
    higher_is_better: bool = False


SCORES: dict[str, Score] = {
    "rmse": Score(se_parts, lambda p: np.sqrt(_ratio(p["se"], p["w"]))),
    "mse": Score(se_parts, lambda p: _ratio(p["se"], p["w"])),
    "mae": Score(ae_parts, lambda p: _ratio(p["ae"], p["w"])),
    "bias": Score(error_parts, lambda p: _ratio(p["e"], p["w"])),
    "corr": Score(moment_parts, _correlation, higher_is_better=True),
    "acc": Score(moment_parts, _acc, "anomaly", True),
    "pod": Score(contingency_parts, lambda p: _table(p).probability_of_detection(), "event", True),
    "far": Score(contingency_parts, lambda p: _table(p).false_alarm_ratio(), "event"),
    "sr": Score(contingency_parts, lambda p: _table(p).success_ratio(), "event", True),
    "csi": Score(contingency_parts, lambda p: _table(p).critical_success_index(), "event", True),
    "ets": Score(contingency_parts, lambda p: _table(p).equitable_threat_score(), "event", True),
    "fbias": Score(contingency_parts, lambda p: _table(p).frequency_bias(), "event"),
    "fss": Score(fss_parts, _fss, "fss", True),
}


def parts_of(name: str, forecast: xr.DataArray, truth: xr.DataArray, *, weights: Weights = None,
             preserve_dims: Dims = (LEAD,), climatology: xr.DataArray | None = None,
             threshold: float | None = None, window: int | None = None) -> xr.Dataset:
    """The additive parts of score `name`, summed over every dim but `preserve_dims`."""
    s = SCORES[name]
    extra = {"anomaly": {"climatology": climatology}, "event": {"threshold": threshold},
             "fss": {"threshold": threshold, "window": window}}.get(s.kind, {})
    if any(v is None for v in extra.values()):
        raise ValueError(f"score {name!r} needs {', '.join(extra)}, but got {extra}")
    return s.parts(forecast, truth, weights, tuple(preserve_dims), **extra)


def finish(name: str, parts: xr.Dataset) -> xr.DataArray:
    return SCORES[name].finish(parts).drop_vars("contingency", errors="ignore").rename(name)


def score(name: str, forecast: xr.DataArray, truth: xr.DataArray, **kw: object) -> xr.DataArray:
    """Score `name` (a key of SCORES) of forecast against truth, per `preserve_dims` (default: per lead)."""
    return finish(name, parts_of(name, forecast, truth, **kw))


def skill(score_value: xr.DataArray, reference_value: xr.DataArray) -> xr.DataArray:
    """1 - score / score of the reference: 1 perfect, 0 no better than the reference, < 0 worse."""
    return 1 - score_value / reference_value.where(reference_value != 0)


# --- the one-signature public scores ----------------------------------------------------------------------------

def rmse(forecast: xr.DataArray, truth: xr.DataArray,
        *, weights: Weights = None, preserve_dims: Dims = (LEAD,)) -> xr.DataArray:
    return score("rmse", forecast, truth, weights=weights, preserve_dims=preserve_dims)


def mae(forecast: xr.DataArray, truth: xr.DataArray,
        *, weights: Weights = None, preserve_dims: Dims = (LEAD,)) -> xr.DataArray:
    return score("mae", forecast, truth, weights=weights, preserve_dims=preserve_dims)


def bias(forecast: xr.DataArray, truth: xr.DataArray,
        *, weights: Weights = None, preserve_dims: Dims = (LEAD,)) -> xr.DataArray:
    """Mean of forecast - truth."""
    return score("bias", forecast, truth, weights=weights, preserve_dims=preserve_dims)


def correlation(forecast: xr.DataArray, truth: xr.DataArray,
        *, weights: Weights = None, preserve_dims: Dims = (LEAD,)) -> xr.DataArray:
    """Weighted Pearson correlation pooled over every reduced dim (time and space)."""
    return score("corr", forecast, truth, weights=weights, preserve_dims=preserve_dims)


def acc(forecast: xr.DataArray, truth: xr.DataArray,
        *, climatology: xr.DataArray, weights: Weights = None, preserve_dims: Dims = (LEAD,)) -> xr.DataArray:
    return score("acc", forecast, truth, weights=weights, preserve_dims=preserve_dims, climatology=climatology)


def rmse_skill(forecast: xr.DataArray, truth: xr.DataArray,
        *, reference: xr.DataArray, weights: Weights = None, preserve_dims: Dims = (LEAD,)) -> xr.DataArray:
    """RMSE skill score against a reference forecast (persistence or climatology), on the same points."""
    ok = reference.notnull()
    return skill(rmse(forecast.where(ok), truth, weights=weights, preserve_dims=preserve_dims),
                 rmse(reference, truth.where(forecast.notnull()), weights=weights, preserve_dims=preserve_dims))


def categorical(name: str, forecast: xr.DataArray, truth: xr.DataArray,
        *, threshold: float, preserve_dims: Dims = (LEAD,)) -> xr.DataArray:
    """pod, far, sr, csi, ets or fbias of the event `value >= threshold`."""
    if SCORES.get(name, SCORES["rmse"]).kind != "event":
        raise ValueError(f"categorical score must be one of pod, far, sr, csi, ets, fbias, but got {name!r}")
    return score(name, forecast, truth, preserve_dims=preserve_dims, threshold=threshold)


def fss(forecast: xr.DataArray, truth: xr.DataArray,
        *, threshold: float, window: int, preserve_dims: Dims = (LEAD,)) -> xr.DataArray:
    """Fractions skill score of `value >= threshold` in window x window neighbourhoods (no padding)."""
    return score("fss", forecast, truth, preserve_dims=preserve_dims, threshold=threshold, window=window)
