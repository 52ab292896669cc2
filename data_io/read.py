"""Open a file, decide what to read from it (a Selection), and read that selection one block of time steps at a time.

A leaf of data_io: it knows the file, the config and the coordinate conventions, nothing about caches or
normalisation. It is the one place that names the dims other than time/lat/lon (``extra_dims``), spells a
channel ``VAR@LEVEL`` (``channel_name`` / ``variable_of``) and says what a file's time step is (``time_step``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from data_io import _grid
from data_io._combine import combine
from data_io._coords import box_indices, standardize, to_file_convention, west_to_east
from data_io._errors import ConfigError, DataError
from data_io._files import is_zarr, sources
from data_io._netcdf3 import expected_size
from data_io.config import DataConfig

log = logging.getLogger(__name__)

GRID_DIMS = ("time", "lat", "lon")
PROJECTED_DIMS = ("time", *_grid.DIMS)  # a regional model's native grid: rows y, columns x, 2-D lat/lon
STREAMS = ("inputs", "targets", "upstream")
# netCDF-C gives every variable a 64 MB HDF5 chunk cache by default: 400 MB for the reference schema, of no use to
# reads that visit each chunk once (ours, in memory or streamed). prepare() opens files with this much instead.
NC_CHUNK_CACHE_BYTES = 4 * 2**20
MIN_CHUNK_CACHE_BYTES = 2**20  # HDF5's own default per dataset


def open_dataset(data: str | os.PathLike | Sequence[str | os.PathLike]) -> xr.Dataset:
    """Open ``--data`` lazily with xarray: one netCDF file, a Zarr store, or many files combined into one dataset.

    Many files (a list, a glob, a folder) are opened with dask chunks and concatenated in time / merged across
    variables (data_io._combine); nothing is loaded until read_block asks for a block of time steps.
    Anything that is not readable becomes one DataError line.
    """
    paths = sources(data)
    if len(paths) == 1:
        return _open_one(paths[0], chunks=None)
    datasets: list[xr.Dataset] = []
    try:
        for path in paths:
            datasets.append(_open_one(path, chunks={}))
        return combine(datasets, paths)
    except BaseException:
        for ds in datasets:
            ds.close()
        raise


def _open_one(path: Path, chunks: dict | None) -> xr.Dataset:
    coder = xr.coders.CFDatetimeCoder(use_cftime=None)
    if is_zarr(path):
        try:
            ds = xr.open_zarr(path, decode_times=coder)
        except Exception as exc:  # zarr raises its own types for a damaged store
            raise DataError(f"--data {path}: not a readable Zarr store ({type(exc).__name__}: {str(exc)[:120]}); "
                            "pass a Zarr store written by xarray (to_zarr)") from None
        return standardize(ds, str(path))
    if path.is_dir():
        raise DataError(f"--data {path}: a folder inside a folder of netCDF files; pass the files themselves")
    if os.path.getsize(path) == 0:
        raise DataError(f"--data {path}: the file is empty; pass a netCDF file")
    try:
        need = expected_size(path)
        ds = xr.open_dataset(path, decode_times=coder, chunks=chunks)
    except Exception as exc:  # netCDF4/h5netcdf/scipy each raise their own types for unreadable files
        raise DataError(
            f"--data {path}: not a readable netCDF file ({type(exc).__name__}: {str(exc)[:120]}); "
            "pass a netCDF3/netCDF4 file"
        ) from None
    if need is not None and os.path.getsize(path) < need:  # netCDF-C would read the missing bytes as zeros
        ds.close()
        raise DataError(
            f"--data {path}: the file is truncated ({os.path.getsize(path)} of {need} bytes); "
            "copy or download it again"
        )
    try:
        return standardize(ds, str(path))
    except BaseException:
        ds.close()
        raise


@contextlib.contextmanager
def small_chunk_cache(n_files: int = 1) -> Iterator[None]:
    """Files opened inside get NC_CHUNK_CACHE_BYTES / n_files of HDF5 chunk cache per variable (netCDF4 engine):
    every open file keeps its own caches, so many files share the budget of one (20 files x 6 variables x 4 MB
    was 480 MB of a build's peak RSS).

    Never under MIN_CHUNK_CACHE_BYTES: a cache smaller than one chunk (a 0.25 deg level plane is 226 kB) makes HDF5
    read a cropped box straight from disk row by row, a few hundred bytes a call (20 files of 30 GB streamed at
    9 MB/s). HDF5 shares one cache between all handles of a dataset, so the first open of a file in a process decides.
    """
    import netCDF4

    saved = netCDF4.get_chunk_cache()
    netCDF4.set_chunk_cache(max(MIN_CHUNK_CACHE_BYTES, NC_CHUNK_CACHE_BYTES // max(1, n_files)), 521, 0.75)
    try:
        yield
    finally:
        netCDF4.set_chunk_cache(*saved)


# ---- names ---------------------------------------------------------------------------------------------------
def horizontal_dims(ds: xr.Dataset) -> tuple[str, str]:
    """The row and column dims of an opened file: ("lat", "lon"), or ("y", "x") on a projected grid."""
    return _grid.DIMS if _grid.GRID_ATTR in ds.attrs else ("lat", "lon")


def extra_dims(var: xr.DataArray) -> list[str]:
    """The dims of a variable other than time and the horizontal ones (a level axis, or nothing)."""
    return [str(d) for d in var.dims if d not in GRID_DIMS and d not in PROJECTED_DIMS]


def channel_name(variable: str, level: object = None) -> str:
    """``VAR`` for a surface field, ``VAR@LEVEL`` for one level of a leveled field (850.0 -> "850")."""
    if level is None:
        return variable
    return f"{variable}@{level:g}" if isinstance(level, float) else f"{variable}@{level}"


def variable_of(channel: str) -> str:
    """The variable a channel was read from: ``TEM@850`` -> ``TEM``."""
    return channel.split("@")[0]


def spacings(times: np.ndarray) -> np.ndarray:
    """The spacing between consecutive time stamps as numpy timedelta64 (cftime dates too)."""
    diffs = np.asarray(times[1:] - times[:-1])
    if diffs.dtype == object:  # cftime dates differ by datetime.timedelta
        diffs = np.array([np.timedelta64(d, "us") for d in diffs], dtype="timedelta64[us]")
    return diffs


def time_step(times: np.ndarray, source: str = "the file") -> np.timedelta64:
    """A file's time step: the most common spacing between consecutive time stamps (the smaller one on a tie).

    Works for numpy datetimes and cftime dates alike; the result is a numpy timedelta64 either way.
    """
    if len(times) < 2:
        raise DataError(f"{source}: has a single time step, so its time step is unknown; "
                        "pass a file with at least two steps")
    values, counts = np.unique(spacings(times), return_counts=True)
    return values[int(np.argmax(counts))]


def regular_steps(times: np.ndarray) -> np.ndarray:
    """Per spacing, whether it is one time step. Monthly and yearly files are calendar-regular: a step of 28-31
    (365-366) days counts as one when the stamps are in consecutive months (years), whatever the month's length."""
    diffs = spacings(times)
    step = time_step(times)
    day = np.timedelta64(1, "D")
    for low, high, unit in ((28, 31, 12), (365, 366, 1)):
        if low * day <= step <= high * day:
            years = np.array([t.year for t in _stamps(times)])
            months = np.array([t.month for t in _stamps(times)])
            index = years * 12 + months - 1 if unit == 12 else years
            return np.diff(index) == 1
    return diffs == step


def _stamps(times: np.ndarray) -> list:
    """Objects with .year/.month: pandas Timestamps for numpy datetimes, the cftime dates themselves."""
    return list(pd.DatetimeIndex(times)) if np.issubdtype(np.asarray(times).dtype, np.datetime64) else list(times)


# ---- the selection -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Stream:
    """One array prepare() makes: which variables, over which box, giving which channels.

    lat_idx/lon_idx are the box's rows and columns of the file's grid (of y and x on a projected grid).
    """

    variables: list[str]
    lat_idx: np.ndarray
    lon_idx: np.ndarray
    channels: list[str]

    def shape(self, n_times: int) -> tuple[int, int, int, int]:
        return n_times, len(self.channels), len(self.lat_idx), len(self.lon_idx)


@dataclass(frozen=True)
class Selection:
    """What to read from one open file: the time order, the streams (inputs, targets[, upstream]) and the grid."""

    path: str
    times: np.ndarray  # in time order
    order: np.ndarray | None  # file row of each time-ordered step (None: the file is in order)
    streams: dict[str, Stream]
    levels: dict[str, list]  # level values of each leveled input variable
    lat: np.ndarray  # all latitudes of the file (ascending); the streams index into these. 2-D (y, x) when projected
    lon: np.ndarray
    lon_signed: bool
    target_attrs: dict[str, dict[str, str]]
    grid: _grid.ProjectedGrid | None = None  # None: a regular lat/lon grid

    def coords(self, stream: str) -> tuple[np.ndarray, np.ndarray]:
        """The latitudes and longitudes of one stream's box: 1-D on a regular grid, 2-D (rows, cols) if projected."""
        s = self.streams[stream]
        if self.grid is None:
            return self.lat[s.lat_idx], self.lon[s.lon_idx]
        cells = np.ix_(s.lat_idx, s.lon_idx)
        return self.lat[cells], self.lon[cells]

    @property
    def row_of(self) -> np.ndarray:
        """Time-ordered row of each file row."""
        return np.arange(len(self.times)) if self.order is None else np.argsort(self.order)

    def nbytes(self) -> int:
        """Bytes of the float32 arrays this selection makes (all streams)."""
        return sum(4 * int(np.prod(s.shape(len(self.times)))) for s in self.streams.values())

    def row_bytes(self) -> int:
        return sum(4 * int(np.prod(s.shape(1))) for s in self.streams.values())


def select(ds: xr.Dataset, cfg: DataConfig, path: str) -> Selection:
    """Check the file against the config and decide what to read; reads only coordinates and metadata."""
    times = _checked_times(ds, path)
    order = np.argsort(times, kind="stable") if not _is_sorted(times) else None
    if order is not None:
        log.warning("%s: time stamps were not in order; sorting them", path)
        times = times[order]
    gridded = _gridded_variables(ds)
    if not gridded:
        raise DataError(f"{path}: no (time, [level,] {', '.join(horizontal_dims(ds))}) variables found; "
                        "nothing to train on")
    _refuse_other_grids(ds, gridded, (cfg.variables or list(ds.data_vars)) + (cfg.target or []), path)
    inputs = _pick(cfg.variables, gridded, "--variables", path)
    default_target = ["precipitation"] if "precipitation" in gridded else inputs
    if cfg.multi_variable and cfg.target and list(cfg.target) != list(inputs):  # a checkpoint's own list is fine
        raise ConfigError(f"--multi-variable predicts every input channel, but --target {cfg.target} was also given: "
                          "drop one of them")
    targets = inputs if cfg.multi_variable else _pick(cfg.target or default_target, gridded, "--target", path)

    lat_idx, lon_idx = _downstream_box(ds, cfg, path)
    in_channels, levels = _channels(ds, inputs, path)
    streams = {"inputs": Stream(inputs, lat_idx, lon_idx, in_channels),
               "targets": Stream(targets, lat_idx, lon_idx, _channels(ds, targets, path)[0])}
    if cfg.include_upstream:
        streams["upstream"] = Stream(inputs, *_upstream_box(ds, cfg, path), in_channels)
    return Selection(
        path=path, times=times, order=order, streams=streams, levels=levels,
        lat=ds["lat"].values.astype("float64"), lon=ds["lon"].values.astype("float64"),
        lon_signed=bool(ds.attrs.get("_lon_was_signed", 0)),
        target_attrs={v: {k: str(a) for k, a in ds[v].attrs.items()} for v in targets},
        grid=ds.attrs.get(_grid.GRID_ATTR),
    )


def read_block(ds: xr.Dataset, sel: Selection, stream: str, t0: int, t1: int) -> np.ndarray:
    """File rows t0..t1 of one stream as a (t, C, H, W) float32 array; only the box leaves the file."""
    s = sel.streams[stream]
    out = np.empty(s.shape(t1 - t0), dtype=np.float32)
    c = 0
    row, col = horizontal_dims(ds)
    for name in s.variables:
        var = ds[name].isel({"time": slice(t0, t1), row: _as_slice(s.lat_idx), col: _as_slice(s.lon_idx)})
        dims = extra_dims(var)
        values = np.asarray(var.transpose("time", *dims, row, col).values, dtype=np.float32)
        if np.isinf(values).any():
            raise DataError(f"{sel.path}: variable {name} has inf values; replace them with NaN or valid numbers")
        n = int(np.prod(values.shape[1:-2], dtype=np.int64))
        out[:, c : c + n] = values.reshape(t1 - t0, n, *out.shape[2:])
        c += n
    return out


def _as_slice(idx: np.ndarray) -> slice | np.ndarray:
    """A run of consecutive indices as a slice: dask (many files, Zarr) then reads only the box from each chunk
    instead of whole planes, and netCDF4 reads one hyperslab."""
    if idx.size and np.array_equal(idx, np.arange(idx[0], idx[0] + idx.size)):
        return slice(int(idx[0]), int(idx[0]) + idx.size)
    return idx


def _channels(ds: xr.Dataset, names: list[str], path: str) -> tuple[list[str], dict[str, list]]:
    channels, levels = [], {}
    for name in names:
        dims = extra_dims(ds[name])
        if len(dims) > 1:
            raise DataError(f"{path}: variable {name} has dims {ds[name].dims}; expected (time, [level,] lat, lon)")
        if not dims:
            channels.append(channel_name(name))
            continue
        if dims[0] not in ds[name].coords:
            raise DataError(
                f"{path}: variable {name} has a '{dims[0]}' dimension without coordinate values; "
                "add the level values (e.g. pressure in hPa) to the file"
            )
        levels[name] = ds[name][dims[0]].values.tolist()
        channels += [channel_name(name, level) for level in levels[name]]
    return channels, levels


def _checked_times(ds: xr.Dataset, path: str) -> np.ndarray:
    times = ds["time"].values
    if times.size == 0:
        raise DataError(f"{path}: the time dimension is empty")
    if times.dtype.kind in "iuf":
        raise DataError(
            f"{path}: time values are plain numbers without CF units; add a units attribute "
            "like 'hours since 2000-01-01'"
        )
    if len(np.unique(times)) != len(times):
        raise DataError(f"{path}: duplicate time stamps; remove the repeated steps from the file")
    return times


def _is_sorted(times: np.ndarray) -> bool:
    return all(a < b for a, b in zip(times[:-1], times[1:]))


def _gridded_variables(ds: xr.Dataset) -> list[str]:
    out, grid_dims = [], {"time", *horizontal_dims(ds)}
    for name, var in ds.data_vars.items():
        if grid_dims <= set(var.dims) and var.ndim in (3, 4) and var.dtype.kind in "fiu":
            out.append(str(name))
    return out


def _refuse_other_grids(ds: xr.Dataset, gridded: list[str], wanted: list[str], path: str) -> None:
    """Variables with a time axis on other dims than lat/lon (e.g. another resolution) are not dropped silently."""
    other = [
        f"{name} {tuple(map(str, ds[name].dims))}" for name in dict.fromkeys(wanted)
        if name in ds.data_vars and name not in gridded and "time" in ds[name].dims and ds[name].ndim in (3, 4)
    ]
    if other:
        raise DataError(
            f"{path}: {', '.join(other)} not on the (time, [level,] {', '.join(horizontal_dims(ds))}) grid of "
            f"{', '.join(gridded)}; "
            "regrid the variables onto one grid, or leave these out with --variables"
        )


def _pick(requested: list[str] | None, available: list[str], flag: str, path: str) -> list[str]:
    if not requested:
        return list(available)
    missing = [v for v in requested if v not in available]
    if missing:
        raise DataError(f"{flag} {' '.join(missing)}: not in {path}; the file has {', '.join(available)}")
    return list(requested)


def _default_box(cfg: DataConfig, prefix: str) -> bool:
    defaults = {f.name: f.default for f in fields(DataConfig)}
    return all(getattr(cfg, f"{prefix}_{k}") == defaults[f"{prefix}_{k}"]
               for k in ("lat_min", "lat_max", "lon_min", "lon_max"))


def _box(ds: xr.Dataset, cfg: DataConfig, prefix: str, path: str) -> tuple[np.ndarray, np.ndarray] | None:
    if _grid.GRID_ATTR in ds.attrs:
        box = tuple(getattr(cfg, f"{prefix}_{k}") for k in ("lat_min", "lat_max", "lon_min", "lon_max"))
        cells = _grid.box_cells(ds["lat"].values, ds["lon"].values, *box)
        if cells is not None:
            _grid.log_box(prefix, path, ds["lat"].values, ds["lon"].values, box, *cells)
        return cells
    lat = box_indices(ds["lat"].values, getattr(cfg, f"{prefix}_lat_min"), getattr(cfg, f"{prefix}_lat_max"))
    lon = box_indices(
        ds["lon"].values, getattr(cfg, f"{prefix}_lon_min"), getattr(cfg, f"{prefix}_lon_max"), periodic=True
    )
    return (lat, lon) if lat is not None and lon is not None else None


def _grid_extent(ds: xr.Dataset) -> str:
    lat, lon = ds["lat"].values, ds["lon"].values
    if _grid.GRID_ATTR in ds.attrs:
        return _grid.extent(lat, lon)
    west, east = to_file_convention(lon[west_to_east(lon)][[0, -1]], bool(ds.attrs.get("_lon_was_signed", 0)))
    return f"lat {lat.min():g}..{lat.max():g}, lon {west:g}..{east:g}"


def _downstream_box(ds: xr.Dataset, cfg: DataConfig, path: str) -> tuple[np.ndarray, np.ndarray]:
    box = _box(ds, cfg, "downstream", path)
    if box is not None:
        return box
    if _default_box(cfg, "downstream"):
        log.info("%s does not cover the default downstream box; using the whole grid (%s)", path, _grid_extent(ds))
        if _grid.GRID_ATTR in ds.attrs:
            return np.arange(ds.sizes["y"]), np.arange(ds.sizes["x"])
        return np.arange(ds.sizes["lat"]), west_to_east(ds["lon"].values)
    raise DataError(
        f"--downstream-lat/lon-min/max: the box {cfg.downstream_lat_min}..{cfg.downstream_lat_max}N, "
        f"{cfg.downstream_lon_min}..{cfg.downstream_lon_max}E is outside {path} ({_grid_extent(ds)}); "
        "give a box inside the grid"
    )


def _upstream_box(ds: xr.Dataset, cfg: DataConfig, path: str) -> tuple[np.ndarray, np.ndarray]:
    box = _box(ds, cfg, "upstream", path)
    if box is None:
        raise DataError(
            f"--include-upstream: the upstream box {cfg.upstream_lat_min}..{cfg.upstream_lat_max}N, "
            f"{cfg.upstream_lon_min}..{cfg.upstream_lon_max}E is outside {path} ({_grid_extent(ds)}); "
            "set --upstream-lat/lon-min/max inside the grid or drop --include-upstream"
        )
    return box
