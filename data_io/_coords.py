"""Coordinate conventions: names, longitude wrap, latitude order, region boxes."""

from __future__ import annotations

import numpy as np
import xarray as xr

from data_io import _grid
from data_io._errors import DataError

_ALIASES = {
    "lat": ("lat", "latitude", "nav_lat", "y_lat", "XLAT", "XLAT_M"),
    "lon": ("lon", "longitude", "nav_lon", "x_lon", "XLONG", "XLONG_M"),
    "level": ("level", "plev", "pressure", "lev", "isobaricInhPa", "pressure_level"),
    "time": ("time", "valid_time", "t", "Time"),
}


def standardize(ds: xr.Dataset, path: str) -> xr.Dataset:
    """Rename coordinates to time/level/lat/lon, sort latitudes ascending and longitudes into 0..360.

    A projected grid (2-D lat/lon) keeps its native rows and columns: see data_io._grid.
    """
    ds = _grid.wrf_times(ds, path)
    rename = {}
    for canonical, names in _ALIASES.items():
        for name in names:
            # A 2-D data variable named like a latitude (WRF's XLAT without a 'coordinates' attribute) counts too.
            if name in ds.dims or name in ds.coords or (name in ds.data_vars and ds[name].ndim >= 2
                                                        and canonical in ("lat", "lon")):
                if name != canonical:
                    rename[name] = canonical
                break
    ds = ds.rename(rename)
    original = {new: old for old, new in rename.items()}
    if _grid.is_projected(ds):
        if "time" not in ds.dims or "time" not in ds.coords:
            raise DataError(f"{path}: no 'time' coordinate (dims are {sorted(map(str, ds.dims))}); "
                            f"name it one of {list(_ALIASES['time'])} and give it CF units")
        return _grid.standardize_projected(ds, path, original)
    for dim in ("time", "lat", "lon"):
        if dim not in ds.dims:
            if not ds.dims and not ds.variables:
                raise DataError(
                    f"{path}: no variables at the file's root (data inside netCDF4 groups is not read); "
                    "write the variables at the root of the file"
                )
            if any(str(d).startswith("phony_dim_") for d in ds.dims):
                raise DataError(
                    f"{path}: a plain HDF5 file, not netCDF (its dimensions have no names: "
                    f"{sorted(map(str, ds.dims))}); write it as netCDF with named time/lat/lon dimensions"
                )
            raise DataError(
                f"{path}: no '{dim}' dimension (dims are {sorted(map(str, ds.dims))}); "
                f"name it one of {list(_ALIASES[dim])}"
            )
        if dim not in ds.coords:
            raise DataError(f"{path}: dimension '{dim}' has no coordinate values; add them to the file")
    for dim in ("lat", "lon"):
        values = ds[dim].values
        if values.dtype.kind not in "iuf" or not np.isfinite(values).all() or len(np.unique(values)) < len(values):
            raise DataError(
                f"{path}: coordinate '{original.get(dim, dim)}' must hold distinct finite numbers, but has "
                f"{_summary(values)}; fix the grid's coordinate values"
            )
    lon = ds["lon"].values.astype("float64")
    _, first = np.unique(np.mod(lon, 360.0), return_index=True)
    if len(first) < len(lon):  # a global grid that stores both -180 and 180 (or 0 and 360): one column twice
        ds, lon = ds.isel(lon=np.sort(first)), lon[np.sort(first)]
    ds = ds.assign_coords(lon=np.mod(lon, 360.0)).sortby("lon").sortby("lat")
    ds.attrs["_lon_was_signed"] = int(bool((lon < 0).any()))
    return ds


def _summary(values: np.ndarray) -> str:
    if values.dtype.kind not in "iuf":
        return f"values of type {values.dtype}"
    if not np.isfinite(values).all():
        return f"{int((~np.isfinite(values)).sum())} NaN/inf value(s)"
    uniq, counts = np.unique(values, return_counts=True)
    return f"repeated values {uniq[counts > 1][:5].tolist()}"


def box_indices(
    coord: np.ndarray, lo: float, hi: float, periodic: bool = False
) -> np.ndarray | None:
    """Indices of the cells inside [lo, hi], in increasing geographic order; None if the box is not covered.

    The box is covered when it lies inside the grid's extent (within one grid spacing).
    For longitudes both boxes and grid are compared modulo 360, so -70..-50 and 290..310 select the same cells.
    """
    coord = np.asarray(coord, dtype="float64")
    step = float(np.median(np.diff(coord))) if coord.size > 1 else 1.0
    tol = step * 0.5 + 1e-6
    if not periodic:
        if lo > hi or lo < coord.min() - tol or hi > coord.max() + tol:
            return None
        idx = np.nonzero((coord >= lo - 1e-6) & (coord <= hi + 1e-6))[0]
        return idx if idx.size >= 2 else None
    span = 360.0 if hi - lo >= 360.0 - 1e-6 else (hi - lo) % 360.0  # 0..360 or -180..180: the whole circle
    lo, hi = lo % 360.0, hi % 360.0
    offset = (coord - lo) % 360.0
    inside = offset <= span + 1e-6
    idx = np.nonzero(inside)[0]
    idx = idx[np.argsort(offset[idx], kind="stable")]
    full_circle = coord.max() - coord.min() + step >= 360.0 - 1e-6
    if not full_circle:
        # A regional grid covers the box only when the box's ends lie within the grid's span.
        for end in (lo, hi):
            if np.min(np.abs((coord - end + 180.0) % 360.0 - 180.0)) > tol:
                return None
    return idx if idx.size >= 2 else None


def west_to_east(lon: np.ndarray) -> np.ndarray:
    """Indices of every longitude (sorted in 0..360) from the grid's western edge eastward.

    A regional grid that crosses 0E (e.g. -20..20 in the file) starts after its gap, not at 0E.
    """
    lon = np.asarray(lon, dtype="float64")
    gaps = np.diff(np.append(lon, lon[0] + 360.0))
    start = int(np.argmax(gaps)) + 1 if gaps.max() > 1.5 * np.median(gaps) else 0
    return np.roll(np.arange(lon.size), -start)


def to_file_convention(lon: np.ndarray, signed: bool) -> np.ndarray:
    """Longitudes back in the convention of the input file (-180..180 when it used negatives)."""
    return (lon + 180.0) % 360.0 - 180.0 if signed else lon
