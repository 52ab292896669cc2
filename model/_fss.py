"""Per-field FSS components from `scores`' own FSS backend, so FSS pools (and bootstraps) over time.

`scores.spatial.fss_2d` returns only the finished score; the bootstrap needs the per-field sums it pools
(mean forecast fraction power, observed power, squared difference), which its NumPy backend computes. These two
private names are the only `scores` internals used; tests/model/test_verify.py checks the pooled result against
the public `fss_2d`, so a change in `scores` shows there.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr
from scores.fast.fss.fss_numpy import FssNumpy
from scores.spatial.fss_impl import _make_numpy_threshold_operator


def _field(f: np.ndarray, o: np.ndarray, threshold: float, window: int) -> tuple[float, float, float]:
    # Masked cells hold no event in either field: they add nothing to the difference, only to the window count.
    ok = np.isfinite(f) & np.isfinite(o)
    f, o = np.where(ok, f, -np.inf), np.where(ok, o, -np.inf)
    backend = FssNumpy(f, o, event_threshold=threshold, window_size=(window, window), zero_padding=False,
                       threshold_operator=_make_numpy_threshold_operator(np.greater_equal))
    return tuple(float(x) for x in backend.compute_fss_decomposed().item())


def fss_parts(forecast: xr.DataArray, truth: xr.DataArray, weights=None, preserve_dims: Sequence[str] = ("lead",),
              threshold: float = 1.0, window: int = 5) -> xr.Dataset:
    """Sums over fields of (forecast power, observed power, difference power) and the field count."""
    del weights  # FSS counts cells, as `scores` does
    space = list(truth.dims[-2:])
    if window > min(truth.sizes[d] for d in space):
        raise ValueError(f"FSS window {window} is larger than the grid {dict((d, truth.sizes[d]) for d in space)}; "
                         "pass smaller --fss-windows")
    f, o = xr.broadcast(forecast.astype("float64"), truth.astype("float64"))
    comps = xr.apply_ufunc(lambda a, b: np.array(_field(a, b, threshold, window)), f, o,
                           input_core_dims=[space, space], output_core_dims=[["component"]], vectorize=True)
    keep = [d for d in preserve_dims if d in comps.dims]
    red = [d for d in comps.dims if d not in keep and d != "component"]
    sums = comps.sum(red)
    count = xr.ones_like(comps.isel(component=0, drop=True)).sum(red)
    return xr.Dataset({"fcst": sums.isel(component=0, drop=True), "obs": sums.isel(component=1, drop=True),
                       "diff": sums.isel(component=2, drop=True), "n": count})
