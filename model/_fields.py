"""One builder of the xarray fields the verification scores take: dims (time, lead, <2 spatial>), lat/lon coords."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import xarray as xr


def field_array(values: np.ndarray, lat: np.ndarray, lon: np.ndarray, *, name: str, attrs: Mapping | None = None,
                times: Sequence | None = None, leads: Sequence | None = None) -> xr.DataArray:
    """(time, lead, lat, lon) values as a named DataArray; a 2-D (curvilinear) lat/lon grid gets dims (y, x)."""
    lat, lon = np.asarray(lat), np.asarray(lon)
    if lat.ndim == 1:
        space, grid = ("lat", "lon"), {"lat": ("lat", lat), "lon": ("lon", lon)}
    else:
        space, grid = ("y", "x"), {"lat": (("y", "x"), lat), "lon": (("y", "x"), lon)}
    coords: dict = dict(grid)
    if times is not None:
        coords["time"] = ("time", np.asarray(times))
    if leads is not None:
        coords["lead"] = ("lead", np.asarray(leads))
    return xr.DataArray(np.asarray(values), dims=("time", "lead", *space), coords=coords, name=name,
                        attrs=dict(attrs or {}))


def metric_channel(target_channels: Sequence[str], target_attrs: Mapping) -> int:
    """The target channel a validation metric scores: the first precipitation-like one, else the first."""
    from model.verify_table import is_precipitation

    for k, name in enumerate(target_channels):
        if is_precipitation(name, target_attrs.get(name.split("@")[0], {})):
            return k
    return 0
