"""Read a netCDF file into a PreparedData: open, validate, crop to the boxes, normalise, split."""

from __future__ import annotations

import logging
import os
from dataclasses import fields

import numpy as np
import xarray as xr

from data_io import cache
from data_io._coords import box_indices, standardize, to_file_convention, west_to_east
from data_io._errors import ConfigError, DataError
from data_io._netcdf3 import expected_size
from data_io.config import DataConfig
from data_io.normalize import NormStats, fit_channel, normalize_inplace
from data_io.prepared import PreparedData
from data_io.windows import split_bounds

log = logging.getLogger(__name__)


def open_dataset(path: str | os.PathLike) -> xr.Dataset:
    """Open lazily with xarray; any file that is not readable netCDF becomes one DataError line."""
    path = str(path)
    if not os.path.exists(path):
        raise DataError(f"--data {path}: no such file; pass the path of a netCDF file")
    if os.path.getsize(path) == 0:
        raise DataError(f"--data {path}: the file is empty; pass a netCDF file")
    try:
        need = expected_size(path) if os.path.isfile(path) else None
        ds = xr.open_dataset(path, decode_times=xr.coders.CFDatetimeCoder(use_cftime=None))
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
    return standardize(ds, path)


def validate_config(cfg: DataConfig) -> None:
    for name in ("window_size", "target_offset", "forecast_steps"):
        if getattr(cfg, name) < 1:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag} must be at least 1, but got {getattr(cfg, name)}")
    if not (0 < cfg.train_ratio < 1 and 0 < cfg.val_ratio < 1 and cfg.train_ratio + cfg.val_ratio < 1):
        raise ConfigError(
            f"--train-ratio {cfg.train_ratio} and --val-ratio {cfg.val_ratio} must be in (0, 1) "
            "and sum to less than 1 (the rest is the test split)"
        )


def prepare(cfg: DataConfig, stats: tuple[NormStats, NormStats] | None = None) -> PreparedData:
    """Load cfg.data into memory as normalised float32 arrays.

    With ``stats`` (input, target), e.g. a checkpoint's, nothing is fitted and the file need not be long enough
    for the train/val splits: the whole file is the "test" split, normalised with the given statistics.
    """
    validate_config(cfg)
    if cfg.data is None:
        raise ConfigError("--data is missing; pass a netCDF file (python -m data_io.demo writes one)")
    path = str(cfg.data)
    cached = cache.open_cached(cfg, stats)  # a file cached before is not opened again
    if cached is not None:
        return cached
    with cache.small_chunk_cache(), open_dataset(path) as ds:
        return _prepare_open(ds, cfg, path, stats)


def _prepare_open(
    ds: xr.Dataset, cfg: DataConfig, path: str, stats: tuple[NormStats, NormStats] | None = None
) -> PreparedData:
    times = _checked_times(ds, path)
    order = np.argsort(times, kind="stable") if not _is_sorted(times) else None
    if order is not None:
        log.warning("%s: time stamps were not in order; sorting them", path)
        times = times[order]
    gridded = _gridded_variables(ds)
    if not gridded:
        raise DataError(f"{path}: no (time, [level,] lat, lon) variables found; nothing to train on")
    _refuse_other_grids(ds, gridded, (cfg.variables or list(ds.data_vars)) + (cfg.target or []), path)
    inputs = _pick(cfg.variables, gridded, "--variables", path)
    default_target = ["precipitation"] if "precipitation" in gridded else inputs
    if cfg.multi_variable and cfg.target and list(cfg.target) != list(inputs):  # a checkpoint's own list is fine
        raise ConfigError(f"--multi-variable predicts every input channel, but --target {cfg.target} was also given: "
                          "drop one of them")
    targets = inputs if cfg.multi_variable else _pick(cfg.target or default_target, gridded, "--target", path)

    lat_idx, lon_idx = _downstream_box(ds, cfg, path)
    up_idx = _upstream_box(ds, cfg, path) if cfg.include_upstream else None
    selection = cache.Selection(times, order, inputs, targets, lat_idx, lon_idx, up_idx)
    if cache.use_cache(ds, cfg, selection):  # too big for memory: streamed to memory-mapped files on disk
        return cache.build(ds, cfg, path, stats, selection)

    in_arr, channels, levels = _read(ds, inputs, lat_idx, lon_idx, order, path)
    tgt_arr, tgt_channels, _ = _read(ds, targets, lat_idx, lon_idx, order, path)
    up_arr = _read(ds, inputs, *up_idx, order, path)[0] if up_idx else None

    if stats is not None:
        splits = {"train": (0, 0), "val": (0, 0), "test": (0, len(times))}
        in_stats, tgt_stats = (_given(s, c, path) for s, c in zip(stats, (channels, tgt_channels)))
    else:
        splits = split_bounds(times, cfg, path)
        train = slice(*splits["train"])
        if np.isnan(tgt_arr[slice(splits["train"][0], splits["val"][1])]).all():
            raise DataError(f"{path}: the target {targets} is NaN everywhere in the box; pick another --target")
        logged = set(cfg.log_variables)
        in_stats = _fit(in_arr[train], channels, logged, path)
        tgt_stats = _fit(tgt_arr[train], tgt_channels, logged, path)
    # The upstream stream reads the same channels: one set of statistics for both boxes keeps them comparable.
    normalize_inplace(in_arr, in_stats)
    normalize_inplace(tgt_arr, tgt_stats)
    np.nan_to_num(in_arr, copy=False, nan=0.0)
    if up_arr is not None:
        normalize_inplace(up_arr, in_stats)
        np.nan_to_num(up_arr, copy=False, nan=0.0)

    return PreparedData(
        config=cfg,
        inputs=in_arr,
        targets=tgt_arr,
        upstream=up_arr,
        times=times,
        lat=ds["lat"].values[lat_idx].astype("float64"),
        lon=ds["lon"].values[lon_idx].astype("float64"),
        channels=channels,
        target_channels=tgt_channels,
        input_stats=in_stats,
        target_stats=tgt_stats,
        splits=splits,
        upstream_lat=ds["lat"].values[up_idx[0]].astype("float64") if up_idx else None,
        upstream_lon=ds["lon"].values[up_idx[1]].astype("float64") if up_idx else None,
        target_attrs={v: {k: str(a) for k, a in ds[v].attrs.items()} for v in targets},
        levels=levels,
        lon_signed=bool(ds.attrs.get("_lon_was_signed", 0)),
    )


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
    out = []
    for name, var in ds.data_vars.items():
        dims = set(var.dims)
        if {"time", "lat", "lon"} <= dims and var.ndim in (3, 4) and var.dtype.kind in "fiu":
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
            f"{path}: {', '.join(other)} not on the (time, [level,] lat, lon) grid of {', '.join(gridded)}; "
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


def _box(ds: xr.Dataset, cfg: DataConfig, prefix: str):
    lat = box_indices(ds["lat"].values, getattr(cfg, f"{prefix}_lat_min"), getattr(cfg, f"{prefix}_lat_max"))
    lon = box_indices(
        ds["lon"].values, getattr(cfg, f"{prefix}_lon_min"), getattr(cfg, f"{prefix}_lon_max"), periodic=True
    )
    return (lat, lon) if lat is not None and lon is not None else None


def _grid_extent(ds: xr.Dataset) -> str:
    lat, lon = ds["lat"].values, ds["lon"].values
    west, east = to_file_convention(lon[west_to_east(lon)][[0, -1]], bool(ds.attrs.get("_lon_was_signed", 0)))
    return f"lat {lat.min():g}..{lat.max():g}, lon {west:g}..{east:g}"


def _downstream_box(ds: xr.Dataset, cfg: DataConfig, path: str):
    box = _box(ds, cfg, "downstream")
    if box is not None:
        return box
    if _default_box(cfg, "downstream"):
        log.info("%s does not cover the default downstream box; using the whole grid (%s)", path, _grid_extent(ds))
        return np.arange(ds.sizes["lat"]), west_to_east(ds["lon"].values)
    raise DataError(
        f"--downstream-lat/lon-min/max: the box {cfg.downstream_lat_min}..{cfg.downstream_lat_max}N, "
        f"{cfg.downstream_lon_min}..{cfg.downstream_lon_max}E is outside {path} ({_grid_extent(ds)}); "
        "give a box inside the grid"
    )


def _upstream_box(ds: xr.Dataset, cfg: DataConfig, path: str):
    box = _box(ds, cfg, "upstream")
    if box is None:
        raise DataError(
            f"--include-upstream: the upstream box {cfg.upstream_lat_min}..{cfg.upstream_lat_max}N, "
            f"{cfg.upstream_lon_min}..{cfg.upstream_lon_max}E is outside {path} ({_grid_extent(ds)}); "
            "set --upstream-lat/lon-min/max inside the grid or drop --include-upstream"
        )
    return box


def _read(ds, names, lat_idx, lon_idx, order, path):
    """Crop each variable while reading (only the box leaves the file) into one (T, C, H, W) array."""
    extra_dims = {}
    for name in names:
        var = ds[name]
        others = [d for d in var.dims if d not in ("time", "lat", "lon")]
        if len(others) > 1:
            raise DataError(f"{path}: variable {name} has dims {var.dims}; expected (time, [level,] lat, lon)")
        extra_dims[name] = others[0] if others else None
    counts = [ds.sizes[d] if d else 1 for d in extra_dims.values()]
    shape = (ds.sizes["time"], sum(counts), len(lat_idx), len(lon_idx))
    out = np.empty(shape, dtype=np.float32)
    channels, levels, c = [], {}, 0
    for name, n in zip(names, counts):
        dim = extra_dims[name]
        var = ds[name].isel(lat=lat_idx, lon=lon_idx)
        var = var.transpose("time", dim, "lat", "lon") if dim else var.transpose("time", "lat", "lon")
        values = np.asarray(var.values, dtype=np.float32)
        if np.isinf(values).any():
            raise DataError(f"{path}: variable {name} has inf values; replace them with NaN or valid numbers")
        out[:, c : c + n] = values.reshape(shape[0], n, *shape[2:])
        if dim:
            if dim not in ds[name].coords:
                raise DataError(
                    f"{path}: variable {name} has a '{dim}' dimension without coordinate values; "
                    "add the level values (e.g. pressure in hPa) to the file"
                )
            lv = ds[name][dim].values.tolist()
            levels[name] = lv
            channels += [f"{name}@{_fmt(level)}" for level in lv]
        else:
            channels.append(name)
        c += n
    if order is not None:
        out = out[order]
    return out, channels, levels


def _fmt(level) -> str:
    return f"{level:g}" if isinstance(level, float) else str(level)


def _given(stats: NormStats, channels: list[str], path: str) -> NormStats:
    """Statistics fitted elsewhere must describe exactly the channels read from this file, in order."""
    if list(stats.channels) != channels:
        raise DataError(
            f"{path}: the channels read ({', '.join(channels)}) differ from those of the given statistics "
            f"({', '.join(stats.channels)}); use a file with the same variables and levels"
        )
    return stats


def _fit(train: np.ndarray, channels: list[str], logged: set[str], path: str) -> NormStats:
    fitted = [fit_channel(train[:, c], name.split("@")[0] in logged) for c, name in enumerate(channels)]
    return _checked_stats(channels, logged, fitted, path)


def _checked_stats(channels: list[str], logged: set[str], fitted: list[tuple[float, float]], path: str) -> NormStats:
    """NormStats from each channel's (mean, std), refusing channels that cannot be z-scored."""
    mean, std, log_flags = [], [], []
    for name, (m, s) in zip(channels, fitted):
        is_log = name.split("@")[0] in logged
        if not np.isfinite(m):
            raise DataError(
                f"{path}: channel {name} is NaN everywhere in the training split; drop it with --variables"
            )
        if s <= 1e-12 * max(1.0, abs(m)):
            raise DataError(
                f"{path}: channel {name} is constant in the training split (std 0), so it cannot be "
                "z-scored; drop it with --variables"
            )
        mean.append(m)
        std.append(s)
        log_flags.append(is_log)
    return NormStats(channels, np.array(mean), np.array(std), np.array(log_flags, dtype=bool))
