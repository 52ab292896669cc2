"""Projected (regional-model) grids: rows and columns of a map projection, with a 2-D latitude and longitude per cell.

WRF, AROME, HARMONIE and COSMO write fields on dims such as ``y, x``, ``south_north, west_east`` or ``rlat, rlon``,
with 2-D ``latitude/longitude`` (``XLAT/XLONG``) coordinates and a CF ``grid_mapping`` variable. We train on that
native grid: ``standardize_projected`` renames the row/column dims to ``y, x`` and the 2-D coordinates to
``lat, lon`` (kept in the file's longitude convention, never sorted), and records in a ``ProjectedGrid`` what the
forecast writer needs to give the forecast the same grid. ``box_cells`` turns a box in degrees into the smallest
index rectangle holding every cell whose centre lies in it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import xarray as xr

from data_io._errors import DataError

log = logging.getLogger(__name__)

DIMS = ("y", "x")  # the canonical names of a projected grid's row and column dims
GRID_ATTR = "_projected_grid"  # where standardize() leaves the ProjectedGrid in ds.attrs
EARTH_RADIUS_KM = 6371.0
_COORD_ATTRS = ("standard_name", "long_name", "units", "axis", "description")


@dataclass(frozen=True)
class ProjectedGrid:
    """What a projected file's grid is called and how it is defined, to write a forecast on the same grid."""

    dims: tuple[str, str]  # the file's names of the row and column dims
    lat_name: str
    lon_name: str
    dtype: str  # of the file's 2-D coordinates, so the forecast's coordinates are the same numbers
    coord_attrs: dict[str, dict] = field(default_factory=dict)  # "lat"/"lon" -> the file's attributes
    mapping: dict | None = None  # {"name": ..., "attrs": {...}}: the CF grid_mapping variable
    axes: dict[str, dict] = field(default_factory=dict)  # "y"/"x" -> {"name", "values", "attrs"}: 1-D coordinates

    def crop(self, rows: np.ndarray, cols: np.ndarray) -> dict:
        """This grid for the cells rows x cols, as plain JSON-able values (PreparedData.grid, checkpoint meta)."""
        axes = {k: {**a, "values": np.asarray(a["values"])[idx].tolist()}
                for (k, a), idx in ((item, rows if item[0] == "y" else cols) for item in self.axes.items())}
        return {"dims": list(self.dims), "lat_name": self.lat_name, "lon_name": self.lon_name, "dtype": self.dtype,
                "coord_attrs": self.coord_attrs, "mapping": self.mapping, "axes": axes}


def wrf_times(ds: xr.Dataset, path: str) -> xr.Dataset:
    """WRF's ``Time`` dim has no coordinate: take XTIME (CF-decoded) or else the ``Times`` strings."""
    if "Time" not in ds.dims or "Time" in ds.coords:
        return ds
    if "XTIME" in ds.variables and ds["XTIME"].dims == ("Time",) and ds["XTIME"].dtype.kind in "Mm O":
        return ds.assign_coords(Time=ds["XTIME"].values).drop_vars("XTIME")
    if "Times" in ds.variables and ds["Times"].dims[:1] == ("Time",):
        raw = ds["Times"].values
        text = [t.decode() if isinstance(t, bytes) else str(t) for t in raw] if raw.ndim == 1 else [
            b"".join(row).decode() for row in raw]
        try:
            stamps = pd.to_datetime([t.strip() for t in text], format="%Y-%m-%d_%H:%M:%S").values
        except ValueError:
            raise DataError(f"{path}: WRF 'Times' values such as {text[0]!r} are not YYYY-MM-DD_hh:mm:ss; "
                            "fix the file's Times variable or add a CF time coordinate") from None
        return ds.assign_coords(Time=stamps).drop_vars("Times")
    return ds


def is_projected(ds: xr.Dataset) -> bool:
    return "lat" in ds.variables and "lon" in ds.variables and (ds["lat"].ndim > 1 or ds["lon"].ndim > 1)


def standardize_projected(ds: xr.Dataset, path: str, original: dict[str, str]) -> xr.Dataset:
    """A file with 2-D lat/lon (already renamed so): grid dims -> y, x; a ProjectedGrid in ds.attrs[GRID_ATTR].

    ``original`` maps canonical names back to the file's (e.g. {"lat": "XLAT"}).
    """
    ds = ds.set_coords([n for n in ("lat", "lon") if n in ds.data_vars])
    lat, lon = _static(ds, "lat", path, original), _static(ds, "lon", path, original)
    if lat.dims != lon.dims or lat.ndim != 2:
        raise DataError(f"{path}: latitude {lat.dims} and longitude {lon.dims} are not on the same 2-D grid; "
                        "write both as (y, x) coordinates")
    dims = tuple(map(str, lat.dims))
    if "time" in dims:
        raise DataError(f"{path}: latitude has dims {dims}; a grid that moves in time cannot be trained on")
    lat_v, lon_v = lat.values.astype("float64"), lon.values.astype("float64")
    for name, v, bound in (("lat", lat_v, 90.0), ("lon", lon_v, 360.0)):
        bad = ~np.isfinite(v) | (np.abs(v) > bound)
        if bad.any():
            raise DataError(f"{path}: coordinate '{original.get(name, name)}' has {int(bad.sum())} cell(s) that "
                            f"are not finite or beyond +-{bound:g} degrees; fix the grid's coordinate values")
    mapping = _mapping(ds, path)
    axes = {}
    for key, dim in zip(DIMS, dims):
        if dim in ds.coords and ds[dim].ndim == 1:
            axes[key] = {"name": dim, "values": ds[dim].values.astype("float64").tolist(),
                         "attrs": _plain(ds[dim].attrs)}
    grid = ProjectedGrid(
        dims=(dims[0], dims[1]), lat_name=original.get("lat", "lat"), lon_name=original.get("lon", "lon"),
        dtype=str(lat.dtype), coord_attrs={"lat": _plain(lat.attrs), "lon": _plain(lon.attrs)},
        mapping=mapping, axes=axes,
    )
    rename = {d: c for d, c in zip(dims, DIMS) if d != c}
    clash = [c for c in rename.values() if c in ds.variables or c in ds.dims]
    if clash:
        raise DataError(f"{path}: the grid dims {dims} cannot be renamed to (y, x): '{clash[0]}' is already used; "
                        "rename that variable or dimension")
    # Coordinates along the grid's dims other than lat/lon (WRF's XLAT_U, COSMO's rlat) would ride along with each
    # variable; their values are in ProjectedGrid.axes.
    extra = [str(n) for n, c in ds.coords.items() if n not in ("lat", "lon", "time")
             and set(c.dims) & set(dims)]
    ds = ds.drop_vars(extra).assign_coords(lat=(dims, lat_v), lon=(dims, lon_v)).rename(rename)
    ds.attrs[GRID_ATTR] = grid
    ds.attrs["_lon_was_signed"] = 0  # projected longitudes stay in the file's convention
    return ds


def _static(ds: xr.Dataset, name: str, path: str, original: dict[str, str]) -> xr.DataArray:
    """A coordinate WRF repeats at every time step (XLAT(Time, ...)), as one 2-D field; a moving grid is refused."""
    coord = ds[name]
    if "time" not in coord.dims or coord.ndim != 3:
        return coord
    first, last = coord.isel(time=0, drop=True), coord.isel(time=-1, drop=True)
    if not np.array_equal(first.values, last.values):
        raise DataError(f"{path}: '{original.get(name, name)}' changes over time (a moving nest); "
                        "pass a file on a fixed grid")
    return first


def _mapping(ds: xr.Dataset, path: str) -> dict | None:
    names = {str(v.attrs["grid_mapping"]).split(":")[0].strip() for v in ds.data_vars.values()
             if "grid_mapping" in v.attrs}
    names |= {str(n) for n, v in ds.variables.items() if "grid_mapping_name" in v.attrs}
    names = sorted(n for n in names if n in ds.variables)
    if len(names) > 1:
        log.warning("%s: several grid_mapping variables (%s); the forecast carries %s", path, names, names[0])
    if names:
        return {"name": names[0], "attrs": _plain(ds[names[0]].attrs)}
    return _wrf_mapping(ds.attrs)


def _wrf_mapping(attrs: dict) -> dict | None:
    """WRF keeps its projection in global attributes; MAP_PROJ 1 (Lambert conformal) as a CF grid mapping."""
    if int(attrs.get("MAP_PROJ", 0)) != 1:
        return None
    return {"name": "lambert_conformal_conic", "attrs": {
        "grid_mapping_name": "lambert_conformal_conic",
        "standard_parallel": [float(attrs["TRUELAT1"]), float(attrs["TRUELAT2"])],
        "longitude_of_central_meridian": float(attrs["STAND_LON"]),
        "latitude_of_projection_origin": float(attrs.get("MOAD_CEN_LAT", attrs.get("CEN_LAT", attrs["TRUELAT1"]))),
        "earth_radius": 6370000.0,  # WRF's sphere
    }}


def _plain(attrs: dict) -> dict:
    """Attributes as JSON-able Python values (numpy scalars and arrays become numbers and lists)."""
    out = {}
    for k, v in attrs.items():
        if k.startswith("_") or k in ("coordinates", "grid_mapping"):
            continue
        if isinstance(v, np.ndarray):
            v = v.tolist()
        elif isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, bytes):
            v = v.decode(errors="replace")
        if isinstance(v, (str, int, float, list)):
            out[str(k)] = v
    return out


# ---- boxes ---------------------------------------------------------------------------------------------------
def in_box(lat: np.ndarray, lon: np.ndarray, lat_min: float, lat_max: float, lon_min: float, lon_max: float
           ) -> np.ndarray:
    """Cells whose centre lies in the box; longitudes compared modulo 360 (-70..-50 is 290..310)."""
    span = 360.0 if lon_max - lon_min >= 360.0 - 1e-6 else (lon_max - lon_min) % 360.0
    inside_lon = (np.asarray(lon, dtype="float64") - lon_min) % 360.0 <= span + 1e-6
    lat = np.asarray(lat, dtype="float64")
    return inside_lon & (lat >= lat_min - 1e-6) & (lat <= lat_max + 1e-6)


def box_cells(lat: np.ndarray, lon: np.ndarray, lat_min: float, lat_max: float, lon_min: float, lon_max: float
              ) -> tuple[np.ndarray, np.ndarray] | None:
    """(rows, columns) of the smallest index rectangle holding every cell whose centre lies in the box.

    None when the grid does not cover the box: a point on the box's edge lies farther than one cell from every
    cell centre, or fewer than 2 x 2 cells result (the same rule as regular grids, within one grid spacing).
    """
    if lat_min > lat_max:
        return None
    inside = in_box(lat, lon, lat_min, lat_max, lon_min, lon_max)
    rows, cols = np.nonzero(inside.any(axis=1))[0], np.nonzero(inside.any(axis=0))[0]
    if rows.size == 0 or cols.size == 0 or not _covers(lat, lon, lat_min, lat_max, lon_min, lon_max):
        return None
    rows, cols = np.arange(rows[0], rows[-1] + 1), np.arange(cols[0], cols[-1] + 1)
    return (rows, cols) if rows.size >= 2 and cols.size >= 2 else None


def _covers(lat: np.ndarray, lon: np.ndarray, lat_min: float, lat_max: float, lon_min: float, lon_max: float) -> bool:
    """Every point along the box's edges is within one cell spacing (diagonal) of a cell centre."""
    span = 360.0 if lon_max - lon_min >= 360.0 - 1e-6 else (lon_max - lon_min) % 360.0
    t = np.linspace(0.0, 1.0, 9)
    lats = np.concatenate([np.full(9, lat_min), np.full(9, lat_max), lat_min + t * (lat_max - lat_min),
                           lat_min + t * (lat_max - lat_min)])
    lons = np.concatenate([lon_min + t * span, lon_min + t * span, np.full(9, lon_min), np.full(9, lon_min + span)])
    flat_lat, flat_lon = lat.ravel(), lon.ravel()
    spacing = _spacing(lat, lon)
    for p_lat, p_lon in zip(lats, lons):
        d = _distance(flat_lat, flat_lon, p_lat, p_lon)
        i = int(np.argmin(d))
        if d[i] > spacing.ravel()[i] + 1e-6:
            return False
    return True


def _spacing(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Per cell, the distance (km) to its diagonal neighbour: one cell's reach in any direction."""
    lat_p = np.pad(lat, 1, mode="edge")
    lon_p = np.pad(lon, 1, mode="edge")
    best = np.zeros(lat.shape)
    h, w = lat.shape
    for dy, dx in ((-1, -1), (-1, 1), (1, -1), (1, 1)):
        d = _distance(lat, lon, lat_p[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w],
                      lon_p[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w])
        best = np.maximum(best, d)
    return best


def _distance(lat1, lon1, lat2, lon2) -> np.ndarray:
    """Great-circle distance in km (haversine)."""
    p1, p2 = np.deg2rad(lat1), np.deg2rad(lat2)
    a = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(np.deg2rad(lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def log_box(label: str, path: str, lat: np.ndarray, lon: np.ndarray, box: tuple[float, float, float, float],
            rows: np.ndarray, cols: np.ndarray) -> None:
    n_in = int(in_box(lat, lon, *box).sum())
    log.info("%s: %s box %g..%gN, %g..%gE holds the centres of %d of %d cells; reading rows %d..%d x columns "
             "%d..%d (%d x %d = %d cells)", path, label, *box, n_in, lat.size, rows[0], rows[-1], cols[0], cols[-1],
             rows.size, cols.size, rows.size * cols.size)


def extent(lat: np.ndarray, lon: np.ndarray) -> str:
    return f"projected grid {lat.shape[0]} x {lat.shape[1]} cells, lat {lat.min():.4g}..{lat.max():.4g}, " \
           f"lon {lon.min():.4g}..{lon.max():.4g}"
