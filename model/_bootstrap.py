"""Moving-block bootstrap of score differences over consecutive test windows.

Forecast errors on consecutive days are correlated, so resampling single windows would make intervals too narrow;
resampling blocks of `block_days` keeps that correlation inside each replicate. Both models are resampled with the
same indices (a paired test). `scores.processing.block_bootstrap` resamples the full fields with the global NumPy
random state and keeps every replicate in memory; here only the per-window parts of a score (model.verify) are
resampled, with a seeded Generator, so a thousand replicates cost a thousand sums of (window, lead) arrays.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import xarray as xr

TIME = "time"


class Difference(NamedTuple):
    """Score of B minus score of A, its 95% (or `level`) interval, and whether the interval excludes 0."""

    difference: xr.DataArray
    low: xr.DataArray
    high: xr.DataArray
    significant: xr.DataArray


def block_length(times: np.ndarray, block_days: float) -> int:
    """Windows per block: `block_days` over the median spacing of the window times (datetime64 or cftime)."""
    if block_days <= 0:
        raise ValueError(f"block length must be positive days, but got {block_days}; pass e.g. --block-days 5")
    if len(times) < 2:
        return 1
    steps = np.diff(np.asarray(times))
    seconds = np.array([s / np.timedelta64(1, "s") if isinstance(s, np.timedelta64) else s.total_seconds()
                        for s in steps], dtype="float64")
    step = float(np.median(seconds))
    if step <= 0:
        raise ValueError(f"window times must increase, but the median step is {step} s")
    return max(1, int(round(block_days * 86400 / step)))


def block_indices(n: int, block: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n) indices into 0..n-1 made of contiguous runs of `block` (the last one cut to fit).

    Blocks start anywhere a whole block fits (non-circular), so no block wraps from the end of the period to
    its start; a block as long as the period gives the period itself.
    """
    if n < 1 or block < 1 or n_boot < 1:
        raise ValueError(f"need n >= 1, block >= 1 and n_boot >= 1, but got n={n}, block={block}, n_boot={n_boot}")
    block = min(block, n)
    n_blocks = -(-n // block)
    starts = rng.integers(0, n - block + 1, size=(n_boot, n_blocks))
    idx = (starts[:, :, None] + np.arange(block)[None, None, :]).reshape(n_boot, -1)
    return idx[:, :n]


def resampled_sums(parts: xr.Dataset, idx: np.ndarray) -> xr.Dataset:
    """Each replicate's sum over `time` of parts taken at the (n_boot, n) indices, as dim `replicate`.

    A replicate's sum is its count of each window times that window's parts, so all replicates are one matrix
    product of (n_boot, n) counts with the (n, rest) parts; NaN parts add nothing, as in xarray's sum.
    """
    n = parts.sizes[TIME]
    rows = np.arange(idx.shape[0])[:, None] * n
    counts = np.bincount((rows + idx).ravel(), minlength=idx.shape[0] * n).reshape(idx.shape[0], n).astype("float64")
    out = {}
    for k, da in parts.data_vars.items():
        da = da.transpose(TIME, ...)
        values = np.nan_to_num(np.asarray(da.values, dtype="float64").reshape(n, -1), nan=0.0)
        out[k] = (("replicate", *da.dims[1:]), (counts @ values).reshape((idx.shape[0], *da.shape[1:])))
    coords = {c: parts.coords[c] for c in parts.coords if TIME not in parts.coords[c].dims}
    return xr.Dataset(out, coords=coords)


def paired_difference(
    parts_a: xr.Dataset,
    parts_b: xr.Dataset,
    finish: Callable[[xr.Dataset], xr.DataArray],
    block: int,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> Difference:
    """finish(B) - finish(A) from per-window parts (dim `time`), with a block-bootstrap interval.

    `finish` turns parts summed over time into the score; it is applied to both models' parts after the same
    resampling of windows.
    """
    if parts_a.sizes.get(TIME) != parts_b.sizes.get(TIME):
        raise ValueError(f"both models need the same windows, but got {parts_a.sizes.get(TIME)} and "
                         f"{parts_b.sizes.get(TIME)} along {TIME!r}")
    diff = finish(parts_b.sum(TIME)) - finish(parts_a.sum(TIME))
    idx = block_indices(parts_a.sizes[TIME], block, n_boot, np.random.default_rng(seed))
    reps = finish(resampled_sums(parts_b, idx)) - finish(resampled_sums(parts_a, idx))
    alpha = (1 - level) / 2
    low = reps.quantile(alpha, "replicate", skipna=False).drop_vars("quantile")
    high = reps.quantile(1 - alpha, "replicate", skipna=False).drop_vars("quantile")
    return Difference(diff, low, high, (low > 0) | (high < 0))
