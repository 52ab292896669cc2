"""Per-field FSS components, vectorised over fields, thresholds and windows with one summed-area table.

`scores.spatial.fss_2d` returns only the finished score; the bootstrap needs the per-field sums it pools
(mean squared forecast window count, observed, and their difference), which its NumPy backend computes one field
at a time. The same sums are computed here for every (field, threshold) at once from one integral image, so a
validation split costs a few array passes instead of a Python call per field; tests/model/test_verify.py checks
the pooled result against the public `fss_2d`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr

THRESHOLD, WINDOW = "threshold", "window"


def _check_windows(truth: xr.DataArray, windows: Sequence[int]) -> None:
    space = list(truth.dims[-2:])
    if max(windows) > min(truth.sizes[d] for d in space):
        raise ValueError(f"FSS window {max(windows)} is larger than the grid "
                         f"{ {d: truth.sizes[d] for d in space} }; pass smaller --fss-windows")


def _integral(x: np.ndarray, ok: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Summed-area table of the events `x >= t` on valid cells, with a zero first row and column.

    int32 holds the running counts of any grid under 46k cells a side and halves the memory traffic.
    """
    events = (x[..., None, :, :] >= t) & ok
    s = np.zeros(events.shape[:-2] + (events.shape[-2] + 1, events.shape[-1] + 1), dtype=np.int32)
    s[..., 1:, 1:] = events.cumsum(-1, dtype=np.int32).cumsum(-2, dtype=np.int32)
    return s


def _window_counts(s: np.ndarray, w: int) -> np.ndarray:
    """Events in every w x w window that fits inside the grid (no padding, as `zero_padding=False`)."""
    h, v = s.shape[-2] - w, s.shape[-1] - w
    counts = s[..., w:, w:] - s[..., :h, w:] - s[..., w:, :v] + s[..., :h, :v]
    # Squares of counts up to w*w must fit too: int32 up to a 215-cell window.
    return counts if w**4 < 2**31 else counts.astype(np.int64)


def _components(f: np.ndarray, o: np.ndarray, thresholds: np.ndarray, windows: Sequence[int]) -> np.ndarray:
    """(..., threshold, window, 3): per field, means over window positions of f^2, o^2 and (o - f)^2 counts."""
    # Masked cells hold no event in either field: they add nothing to the difference, only to the window count.
    ok = (np.isfinite(f) & np.isfinite(o))[..., None, :, :]
    t = np.asarray(thresholds, dtype="float64")[:, None, None]
    sf, so = _integral(f, ok, t), _integral(o, ok, t)
    out = np.empty(f.shape[:-2] + (len(t), len(windows), 3))
    for j, w in enumerate(windows):
        cf, co = _window_counts(sf, w), _window_counts(so, w)
        # Integer squares are exact; the means accumulate in float64, as the `scores` backend does.
        out[..., j, 0] = (cf * cf).mean((-2, -1))
        out[..., j, 1] = (co * co).mean((-2, -1))
        cf -= co
        out[..., j, 2] = (cf * cf).mean((-2, -1))
    return out


def fss_parts_all(forecast: xr.DataArray, truth: xr.DataArray, thresholds: Sequence[float],
                  windows: Sequence[int], preserve_dims: Sequence[str] = ("lead",)) -> xr.Dataset:
    """Sums over fields of (forecast power, observed power, difference power) and the field count, with dims
    `threshold` and `window` (by position: thresholds may be floats in any unit) after the preserved dims."""
    _check_windows(truth, windows)
    f, o = xr.broadcast(forecast, truth)
    o = o.transpose(*f.dims)
    lead_dims = list(f.dims[:-2])
    comps = _components(np.asarray(f.values, dtype="float64"), np.asarray(o.values, dtype="float64"),
                        thresholds, windows)
    keep = [d for d in preserve_dims if d in lead_dims]
    axes = tuple(i for i, d in enumerate(lead_dims) if d not in keep)
    sums = comps.sum(axes)
    n = float(np.prod([f.sizes[d] for d in lead_dims if d not in keep]))
    dims = (*keep, THRESHOLD, WINDOW)
    coords = {d: f[d] for d in keep if d in f.coords}
    names = ("fcst", "obs", "diff")
    ds = xr.Dataset({k: (dims, sums[..., i]) for i, k in enumerate(names)}, coords=coords)
    ds["n"] = xr.full_like(ds["fcst"], n)
    return ds


def fss_parts(forecast: xr.DataArray, truth: xr.DataArray, weights=None, preserve_dims: Sequence[str] = ("lead",),
              threshold: float = 1.0, window: int = 5) -> xr.Dataset:
    """Sums over fields of (forecast power, observed power, difference power) and the field count."""
    del weights  # FSS counts cells, as `scores` does
    return fss_parts_all(forecast, truth, [threshold], [window], preserve_dims).isel({THRESHOLD: 0, WINDOW: 0})
