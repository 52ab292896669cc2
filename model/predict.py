"""Forecast with a trained model: python -m model.predict --checkpoint best.pt --data FILE.nc --output forecast.nc

The model is rebuilt from the checkpoint's config; the file is read with the checkpoint's data config (variables,
boxes, upstream stream) and normalised with the checkpoint's statistics, never refitted. The forecast from the
latest window in the file (or the one ending at --init-time) is written in physical units as CF-1.8 netCDF, with
dim `time` (the valid time). Over a period (--init-times, or --start-time/--end-time) every forecast goes into one
file with dims (forecast_reference_time, forecast_period) and the valid time as a 2-D coordinate (model.period).
--rolling-steps N feeds a multi-variable model's forecast back N times (model.rolling): N * forecast_steps leads.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import fields, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from data_io import ConfigError, DataError, NormStats, PreparedData, data_label, open_dataset, prepare, sources
from data_io.read import regular_steps
from data_io._coords import to_file_convention
from data_io.read import extra_dims, horizontal_dims
from model import checkpoint as ckpt_io
from model._cli import add_dataclass_flags, build
from model._main import run_cli, setup_logging
from model.device import describe, select_device
from model.metrics import denormalize
from model.period import ForecastConfig, check, file_time_step, init_indices, stack_forecasts
from model.period import hours as _hours
from model.period import iso as _iso
from model.rolling import check_rolling, forecast_windows

log = logging.getLogger("convlstm")

PROG = "python -m model.predict"
CHECKPOINT_KEYS = ("config", "model", "meta", "input_stats", "target_stats")
# Attributes that describe how the training file was packed, not the variable; copying them would be wrong.
_PACKING_ATTRS = {"_FillValue", "missing_value", "scale_factor", "add_offset", "valid_range", "valid_min",
                  "valid_max", "coordinates", "grid_mapping", "_Unsigned", "dtype"}


def parser(prog: str = PROG) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    p.add_argument("--output", required=True, help="netCDF file to write the forecast to")
    add_dataclass_flags(p, ForecastConfig)
    return p


def forecast_config(args: argparse.Namespace) -> ForecastConfig:
    known = {f.name for f in fields(ForecastConfig)}
    cfg = build(ForecastConfig, {k: v for k, v in vars(args).items() if k in known}, "flags")
    check(cfg)
    return cfg


def main(argv: list[str] | None = None, prog: str = PROG) -> None:
    def _run() -> int:
        args = parser(prog).parse_args(argv)
        setup_logging()
        cfg = forecast_config(args)
        out = Path(args.output)
        if out.resolve() in sources(cfg.data):
            raise ConfigError(f"--output {out} is one of the --data files; write the forecast to another path")
        forecast = predict_config(cfg)
        command = " ".join([PROG, "--output", str(out), *_flags(cfg)])
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        forecast.attrs["history"] = f"{now}: {command}"
        write_netcdf(forecast, out)
        names = ", ".join(str(v) for v in forecast.data_vars if forecast[v].ndim)  # not the grid_mapping
        valid = forecast["time"].values.ravel()
        log.info("Wrote %s: %s from %s, valid %s .. %s", out, names, forecast.attrs["forecast_reference_time"],
                 _iso(valid.min()), _iso(valid.max()))
        return 0

    run_cli(_run, prog)


def _regular(times: np.ndarray, ends: np.ndarray, window: int, step, path: str, explicit: bool) -> np.ndarray:
    """The initialisations whose `window` input steps are exactly one time step apart, as every training window
    was. One asked for by name that spans a gap is refused; over a period such windows are left out (logged)."""
    keep, regular = [], regular_steps(times)
    for end in ends:
        gaps = np.flatnonzero(~regular[end - window + 1 : end])
        if not gaps.size:
            keep.append(end)
        elif explicit:
            i = end - window + 1 + int(gaps[0])
            raise DataError(f"--data {path}: the {window} input steps up to {_iso(times[end])} span a gap "
                            f"({_iso(times[i])} -> {_iso(times[i + 1])}, the time step is {_hours(step)}); "
                            "pick another initialisation time or fill the gap")
    if not keep:
        raise DataError(f"--data {path}: every initialisation in that period has a gap in its {window} input steps; "
                        "widen the period")
    if len(keep) < len(ends):
        log.info("Left out %d initialisation(s) whose input steps span a gap in %s", len(ends) - len(keep), path)
    return np.array(keep)


def _flags(cfg: ForecastConfig) -> list[str]:
    """The command line that gives `cfg` (non-default fields only), for the file's history."""
    out = []
    for f in fields(ForecastConfig):
        value = getattr(cfg, f.name)
        if value != f.default and value is not None:
            out += [f"--{f.name.replace('_', '-')}", *map(str, value if isinstance(value, list) else [value])]
    return out


def predict(checkpoint: str | Path, data: str | Path, init_time: str | None = None, device: str = "auto",
            **period) -> xr.Dataset:
    """The forecast from one window of `data` as an xarray Dataset in physical units (not yet written).

    `period` takes ForecastConfig's other fields (init_times, start_time, end_time, rolling_steps, batch_size)."""
    data = data if isinstance(data, (str, list)) else str(data)
    cfg = ForecastConfig(checkpoint=str(checkpoint), data=data, init_time=init_time, device=device, **period)
    check(cfg)
    return predict_config(cfg)


def predict_config(cfg: ForecastConfig, every: bool = False) -> xr.Dataset:
    """Every forecast `cfg` asks for, computed `cfg.batch_size` at a time on the device, in physical units.
    `every`: with no time given, forecast from every window of the file (not only the last)."""
    checkpoint, data = str(cfg.checkpoint), cfg.data
    if isinstance(data, list) and len(data) == 1:
        data = data[0]
    label = data_label(data)
    ckpt = _load_checkpoint(checkpoint)
    config, meta = ckpt_io.config_from_checkpoint(ckpt), ckpt["meta"]
    c = config.data
    check_rolling(cfg.rolling_steps, meta["channels"], meta["target_channels"], c.target_offset)
    prepared, level_coords = _read(ckpt, c, data, label, checkpoint)
    times = prepared.times
    # Later rolling steps read the observed upstream box (the model does not forecast it).
    after = (cfg.rolling_steps - 1) * c.forecast_steps if prepared.upstream is not None else 0
    ends = init_indices(times, cfg, c.window_size, after, label, every)
    step = file_time_step(times, label)
    ends = _regular(times, ends, c.window_size, step, label, explicit=not (every or cfg.start_time or cfg.end_time))

    dev = select_device(cfg.device)
    model = ckpt_io.model_from_checkpoint(ckpt).to(dev).eval()
    z = forecast_windows(model, prepared, ends, cfg.rolling_steps, cfg.batch_size, dev)  # (N, lead, C, lat, lon)
    log.info("Forecast on %s from %d initialisation(s), %s .. %s, %d step(s) ahead%s", describe(dev), len(ends),
             _iso(times[ends[0]]), _iso(times[ends[-1]]), z.shape[1],
             f" ({cfg.rolling_steps} rolling steps; later ones read the observed upstream box)"
             if cfg.rolling_steps > 1 and prepared.upstream is not None else "")

    leads = [step * (c.target_offset + k) for k in range(z.shape[1])]
    forecasts = []
    for end, values in zip(ends, z):
        valid = np.array([times[end] + lead for lead in leads])
        if np.issubdtype(times.dtype, np.datetime64):
            valid = valid.astype(times.dtype)
        forecasts.append(_forecast_dataset(_physical(values, prepared.target_stats), prepared, meta, level_coords,
                                           valid, pd.to_timedelta(leads).values, times[end]))
    ds = stack_forecasts(forecasts) if cfg.over_period() or every else forecasts[0]
    ds.attrs["source"] = f"ConvLSTM (convlstm-tune) checkpoint {checkpoint}, epoch {ckpt.get('epoch', '?')}"
    if cfg.rolling_steps > 1:
        ds.attrs["rolling_steps"] = cfg.rolling_steps
    return ds


def write_netcdf(ds: xr.Dataset, path: str | Path) -> Path:
    """Write to a temporary file next to `path`, then rename: a failed write leaves no half file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        ds.to_netcdf(tmp, engine="netcdf4")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


# ---- reading and checking ------------------------------------------------------------------------------------
def _load_checkpoint(path: str | Path) -> dict:
    ckpt = ckpt_io.load(path)
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise ConfigError(
            f"--checkpoint {path}: not a checkpoint written by the trainer (no {', '.join(missing)}); "
            "pass best.pt or last.pt from a training run's --output-dir"
        )
    return ckpt


def _variables(channels: list[str], levels: dict) -> list[str]:
    """Variable names in channel order: 'TEM@850' -> 'TEM' for variables with levels."""
    names: list[str] = []
    for ch in channels:
        head = ch.rsplit("@", 1)[0]
        name = head if "@" in ch and head in levels else ch
        if name not in names:
            names.append(name)
    return names


def _read(ckpt: dict, data_cfg, data, path: str, ckpt_path: str) -> tuple[PreparedData, dict]:
    """The whole of `data` (labelled `path` in messages), cropped like the training data and normalised with the
    checkpoint's statistics."""
    meta = ckpt["meta"]
    inputs = _variables(meta["channels"], meta["levels"])
    targets = _variables(meta["target_channels"], meta["levels"])
    with open_dataset(data) as ds:
        level_coords = _check_variables(ds, meta, inputs + [t for t in targets if t not in inputs], path, ckpt_path)
    cfg = replace(data_cfg, data=data, variables=inputs, target=targets)
    in_stats, tgt_stats = ckpt_io.stats_from_checkpoint(ckpt)
    prepared = prepare(cfg, stats=(in_stats, tgt_stats))
    _check_grid(prepared, meta, path, ckpt_path)
    return prepared, level_coords


def _check_variables(ds: xr.Dataset, meta: dict, names: list[str], path: str, ckpt_path: str) -> dict:
    """Variables present, levels equal and in order, target units unchanged. Returns {var: (level dim, coord)}."""
    gridded = [str(v) for v in ds.data_vars if {"time", *horizontal_dims(ds)} <= set(ds[v].dims)]
    missing = [v for v in names if v not in gridded]
    if missing:
        raise DataError(
            f"--data {path}: no {', '.join(missing)}, which {ckpt_path} was trained on (the file has "
            f"{', '.join(gridded) or 'no gridded variables'}); pass a file with the training data's variables"
        )
    level_coords = {}
    for name in names:
        var = ds[name]
        extra = extra_dims(var)
        expected = meta["levels"].get(name)
        if expected is None and extra:
            raise DataError(f"--data {path}: {name} has a '{extra[0]}' dimension here but had no levels in "
                            f"{ckpt_path}'s training data; pass {name} as (time, lat, lon)")
        if expected is not None:
            if len(extra) != 1:
                raise DataError(f"--data {path}: {name} has dims {var.dims} but {ckpt_path} was trained on "
                                f"levels {expected}; pass {name} as (time, level, lat, lon)")
            dim = extra[0]
            coord = var[dim] if dim in var.coords else xr.DataArray(np.arange(var.sizes[dim]), dims=dim)
            if not _same_levels(coord.values.tolist(), expected):
                raise DataError(
                    f"--data {path}: {name} has levels {coord.values.tolist()} but {ckpt_path} was trained on "
                    f"{expected}; select those levels in that order (e.g. ds.sel({dim}={expected}))"
                )
            level_coords[name] = (dim, coord)
    for name, attrs in meta.get("target_attrs", {}).items():
        want, have = attrs.get("units"), ds[name].attrs.get("units") if name in ds else None
        if want is not None and have is not None and str(have) != want:
            raise DataError(f"--data {path}: {name} is in '{have}' but {ckpt_path} was trained on '{want}'; "
                            f"convert {name} to {want}")
    return level_coords


def _same_levels(actual: list, expected: list) -> bool:
    if len(actual) != len(expected):
        return False
    for a, e in zip(actual, expected):
        if isinstance(e, (int, float)) and isinstance(a, (int, float)):
            if not np.isclose(a, e, rtol=1e-6, atol=1e-6):
                return False
        elif str(a) != str(e):
            return False
    return True


def _check_grid(data: PreparedData, meta: dict, path: str, ckpt_path: str) -> None:
    lat, lon = np.asarray(meta["lat"]), np.asarray(meta["lon"])
    projected = (data.grid is not None, meta.get("grid") is not None)
    if projected[0] != projected[1]:
        kinds = ["a regular lat/lon grid", "a projected grid (2-D latitude/longitude)"]
        raise DataError(f"--data {path}: the file is on {kinds[projected[0]]} but {ckpt_path} was trained on "
                        f"{kinds[projected[1]]}; pass a file on the training data's grid")
    same = (data.lat.shape == lat.shape and data.lon.shape == lon.shape
            and np.allclose(data.lat, lat, atol=1e-4) and np.allclose(data.lon, lon, atol=1e-4))
    if not same:
        raise DataError(
            f"--data {path}: the forecast box here is lat {_span(data.lat)}, lon {_span(data.lon)} but {ckpt_path} "
            f"was trained on lat {_span(lat)}, lon {_span(lon)}; regrid the file to the checkpoint's grid or retrain"
        )
    want_up = meta.get("upstream_shape")
    have_up = list(data.upstream.shape[-2:]) if data.upstream is not None else None
    if want_up is not None and have_up != list(want_up):
        raise DataError(
            f"--data {path}: the upstream box here has {have_up[0]} x {have_up[1]} (lat x lon) cells but {ckpt_path} "
            f"was trained on {want_up[0]} x {want_up[1]}; regrid the file to the training data's grid"
        )


def _span(a: np.ndarray) -> str:
    if a.ndim == 2:
        return f"{a.min():.4g}..{a.max():.4g} ({a.shape[0]} x {a.shape[1]} cells)"
    step = f", step {float(np.median(np.diff(a))):g}" if a.size > 1 else ""
    return f"{a[0]:g}..{a[-1]:g} ({a.size} points{step})"


# ---- the output file -----------------------------------------------------------------------------------------
def _horizontal_coords(data: PreparedData) -> tuple[tuple[str, str], dict]:
    """The forecast's horizontal dims and coordinates: 1-D lat/lon, or a projected grid's own (data.grid)."""
    if data.grid is None:
        return ("lat", "lon"), {
            "lat": ("lat", data.lat, {"standard_name": "latitude", "units": "degrees_north", "axis": "Y"}),
            "lon": ("lon", to_file_convention(data.lon, data.lon_signed),
                    {"standard_name": "longitude", "units": "degrees_east", "axis": "X"}),
        }
    g = data.grid
    dims = (g["dims"][0], g["dims"][1])
    coords = {
        g["lat_name"]: (dims, data.lat.astype(g["dtype"]),
                        {**g["coord_attrs"]["lat"], "standard_name": "latitude", "units": "degrees_north"}),
        g["lon_name"]: (dims, data.lon.astype(g["dtype"]),
                        {**g["coord_attrs"]["lon"], "standard_name": "longitude", "units": "degrees_east"}),
    }
    for key, dim in zip(("y", "x"), dims):
        axis = g["axes"].get(key)
        if axis:
            coords[axis["name"]] = (dim, np.asarray(axis["values"]), dict(axis["attrs"]))
    return dims, coords


def _physical(z: np.ndarray, stats: NormStats) -> np.ndarray:
    """Denormalise; log-transformed channels (precipitation) were clipped at 0 on the way in, and are here too."""
    values = denormalize(z.astype("float64"), stats)
    values = np.where(stats.log.reshape(-1, 1, 1), np.maximum(values, 0.0), values)
    return values.astype(np.float32)


def _forecast_dataset(values, data: PreparedData, meta: dict, level_coords: dict, valid, leads, init) -> xr.Dataset:
    """values (time, target channel, lat, lon) -> one CF variable per target, (time, [level,] lat, lon).

    On a projected grid the horizontal dims, 2-D coordinates and grid_mapping variable are the input file's.
    """
    (row, col), horizontal = _horizontal_coords(data)
    coords = {
        "time": ("time", valid, {"standard_name": "time", "long_name": "valid time", "axis": "T"}),
        **horizontal,
        "forecast_period": ("time", leads, {"standard_name": "forecast_period", "long_name": "lead time"}),
        "forecast_reference_time": ((), init, {"standard_name": "forecast_reference_time",
                                               "long_name": "initialisation time"}),
    }
    channels, variables = meta["target_channels"], {}
    for name in _variables(channels, meta["levels"]):
        idx = [i for i, ch in enumerate(channels) if ch == name or ch.rsplit("@", 1)[0] == name]
        attrs = {k: v for k, v in meta.get("target_attrs", {}).get(name, {}).items() if k not in _PACKING_ATTRS}
        if name in level_coords:
            dim, coord = level_coords[name]
            if dim in coords and not np.array_equal(coords[dim][1], coord.values):
                dim = f"{dim}_{name}"  # another target uses other levels on a dimension of the same name
            coords[dim] = (dim, coord.values, dict(coord.attrs))
            variables[name] = (("time", dim, row, col), values[:, idx], attrs)
        else:
            variables[name] = (("time", row, col), values[:, idx[0]], attrs)
    title = f"ConvLSTM forecast of {', '.join(variables)}"
    mapping = data.grid.get("mapping") if data.grid else None
    if mapping:
        for _, _, attrs in variables.values():
            attrs["grid_mapping"] = mapping["name"]
        variables[mapping["name"]] = ((), np.int32(0), dict(mapping["attrs"]))
    ds = xr.Dataset(variables, coords=coords)
    reference = f"hours since {_iso(init).replace('T', ' ')}"
    for name in ("time", "forecast_reference_time"):
        ds[name].encoding.update(units=reference, dtype="float64")
    for name in ds.coords:
        ds[name].encoding["_FillValue"] = None  # CF: coordinates have no missing values
    ds.attrs.update(
        Conventions="CF-1.8",
        title=title,
        forecast_reference_time=_iso(init),
    )
    return ds


if __name__ == "__main__":
    main()
