"""Forecast with a trained model: python -m model.predict --checkpoint best.pt --data FILE.nc --output forecast.nc

The model is rebuilt from the checkpoint's config; the file is read with the checkpoint's data config (variables,
boxes, upstream stream) and normalised with the checkpoint's statistics, never refitted. The forecast from the
latest window in the file (or the one ending at --init-time) is written in physical units as CF-1.8 netCDF.
"""

from __future__ import annotations

import argparse
import logging
import re
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import xarray as xr

from data_io import (ConfigError, DataError, NormStats, PreparedData, data_label, denormalize, open_dataset, prepare,
                     sources, spacings, time_step)
from data_io._coords import to_file_convention
from model import checkpoint as ckpt_io
from model._main import run_cli, setup_logging
from model.device import describe, select_device

log = logging.getLogger("convlstm")

PROG = "python -m model.predict"
CHECKPOINT_KEYS = ("config", "model", "meta", "input_stats", "target_stats")
# Attributes that describe how the training file was packed, not the variable; copying them would be wrong.
_PACKING_ATTRS = {"_FillValue", "missing_value", "scale_factor", "add_offset", "valid_range", "valid_min",
                  "valid_max", "coordinates", "grid_mapping", "_Unsigned", "dtype"}
_ISO = re.compile(r"^\s*(-?\d{1,4})-(\d{1,2})-(\d{1,2})(?:[T ](\d{1,2})(?::(\d{2})(?::(\d{2}))?)?)?Z?\s*$")


def parser(prog: str = PROG) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="best.pt or last.pt written by the trainer")
    p.add_argument("--data", required=True, nargs="+",
                   help="netCDF file(s), a quoted glob, a folder or a Zarr store (as for training) with the "
                        "variables, levels and grid of the training data")
    p.add_argument("--output", required=True, help="netCDF file to write the forecast to")
    p.add_argument("--init-time", default=None,
                   help="initialisation time, ISO (e.g. 2020-03-01T12:00), a time step of --data; "
                        "default: the file's last time step")
    p.add_argument("--device", default="auto", choices=["auto", "cuda", "mps", "cpu"],
                   help="auto = cuda, then mps, then cpu")
    return p


def main(argv: list[str] | None = None, prog: str = PROG) -> None:
    def _run() -> int:
        args = parser(prog).parse_args(argv)
        setup_logging()
        out = Path(args.output)
        data = args.data[0] if len(args.data) == 1 else args.data
        if out.resolve() in sources(data):
            raise ConfigError(f"--output {out} is one of the --data files; write the forecast to another path")
        forecast = predict(args.checkpoint, data, args.init_time, args.device)
        command = f"{PROG} --checkpoint {args.checkpoint} --data {data_label(data)} --output {args.output}"
        if args.init_time:
            command += f" --init-time {args.init_time}"
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        forecast.attrs["history"] = f"{now}: {command}"
        write_netcdf(forecast, out)
        names = ", ".join(map(str, forecast.data_vars))
        log.info("Wrote %s: %s from %s, valid %s .. %s", out, names, forecast.attrs["forecast_reference_time"],
                 _iso(forecast["time"].values[0]), _iso(forecast["time"].values[-1]))
        return 0

    run_cli(_run, prog)


def predict(checkpoint: str | Path, data: str | Path | list[str], init_time: str | None = None,
            device: str = "auto") -> xr.Dataset:
    """The forecast from one window of `data` (any form --data takes) as an xarray Dataset in physical units."""
    ckpt = _load_checkpoint(checkpoint)
    config, meta = ckpt_io.config_from_checkpoint(ckpt), ckpt["meta"]
    label = data_label(data)
    prepared, level_coords = _read(ckpt, config.data, data, label, str(checkpoint))
    c = config.data
    times = prepared.times
    end = _init_index(times, init_time, c.window_size, label)
    step = _time_step(times, label)
    _check_regular(times, end, c.window_size, step, label)

    dev = select_device(device)
    model = ckpt_io.model_from_checkpoint(ckpt).to(dev).eval()
    window = slice(end - c.window_size + 1, end + 1)
    x = torch.from_numpy(np.array(prepared.inputs[window][None])).to(dev)  # a copy: the cache's memmaps are read-only
    up = torch.from_numpy(np.array(prepared.upstream[window][None])).to(dev) if prepared.upstream is not None else None
    with torch.no_grad():
        z = model(x, up)[0].float().cpu().numpy()  # (forecast_steps, target channels, lat, lon)
    log.info("Forecast on %s from %s, %d step(s) ahead", describe(dev), _iso(times[end]), c.forecast_steps)

    values = _physical(z, prepared.target_stats)
    leads = [step * (c.target_offset + k) for k in range(c.forecast_steps)]
    valid = np.array([times[end] + lead for lead in leads])
    if np.issubdtype(times.dtype, np.datetime64):
        valid = valid.astype(times.dtype)
    ds = _forecast_dataset(values, prepared, meta, level_coords, valid, pd.to_timedelta(leads).values, times[end])
    ds.attrs["source"] = f"ConvLSTM (convlstm-tune) checkpoint {checkpoint}, epoch {ckpt.get('epoch', '?')}"
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
    gridded = [str(v) for v in ds.data_vars if {"time", "lat", "lon"} <= set(ds[v].dims)]
    missing = [v for v in names if v not in gridded]
    if missing:
        raise DataError(
            f"--data {path}: no {', '.join(missing)}, which {ckpt_path} was trained on (the file has "
            f"{', '.join(gridded) or 'no gridded variables'}); pass a file with the training data's variables"
        )
    level_coords = {}
    for name in names:
        var = ds[name]
        extra = [d for d in var.dims if d not in ("time", "lat", "lon")]
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
    step = f", step {float(np.median(np.diff(a))):g}" if a.size > 1 else ""
    return f"{a[0]:g}..{a[-1]:g} ({a.size} points{step})"


# ---- time ----------------------------------------------------------------------------------------------------
def _check_regular(times: np.ndarray, end: int, window: int, step: np.timedelta64, path: str) -> None:
    """The input window must be `window` steps exactly one time step apart, as every training window was."""
    gaps = np.flatnonzero(spacings(times[end - window + 1 : end + 1]) != step)
    if gaps.size:
        i = end - window + 1 + int(gaps[0])
        raise DataError(f"--data {path}: the {window} input steps up to {_iso(times[end])} span a gap "
                        f"({_iso(times[i])} -> {_iso(times[i + 1])}, the time step is {_hours(step)}); "
                        "pick another --init-time or fill the gap")


def _init_index(times: np.ndarray, init_time: str | None, window: int, path: str) -> int:
    """Index of the last input step: the file's last step, or --init-time, with `window` steps up to it."""
    if init_time is None:
        if len(times) < window:
            raise DataError(f"--data {path}: has {len(times)} time step(s) but the model reads {window} "
                            f"(the checkpoint's window_size); pass a file with at least {window} steps")
        return len(times) - 1
    stamp = _parse_time(init_time, times)
    hits = [i for i, t in enumerate(times) if t == stamp]
    if not hits:
        raise DataError(
            f"--init-time {init_time}: not a time step of {path} (it has {len(times)} steps, {_iso(times[0])} .. "
            f"{_iso(times[-1])}, every {_hours(_time_step(times, path))}); pick one of them"
        )
    end = hits[0]
    if end + 1 < window:
        raise DataError(
            f"--init-time {init_time}: the model reads {window} steps up to the initialisation time but {path} "
            f"has only {end + 1} up to it; pick {_iso(times[window - 1])} or later"
        )
    return end


def _parse_time(text: str, times: np.ndarray):
    match = _ISO.match(text)
    if match is None:
        raise ConfigError(f"--init-time {text!r}: not an ISO time; use YYYY-MM-DDTHH:MM (e.g. 2020-03-01T12:00)")
    y, mo, d, h, mi, s = (int(g) if g else 0 for g in match.groups())
    if np.issubdtype(times.dtype, np.datetime64):
        try:
            return np.datetime64(datetime(y, mo, d, h, mi, s)).astype(times.dtype)
        except ValueError as exc:
            raise ConfigError(f"--init-time {text!r}: {exc}; give a valid date") from None
    import cftime

    calendar = getattr(times[0], "calendar", "standard")
    try:
        return cftime.datetime(y, mo, d, h, mi, s, calendar=calendar)
    except ValueError as exc:
        raise ConfigError(f"--init-time {text!r}: {exc} in the file's {calendar} calendar; give a valid date") from None


def _time_step(times: np.ndarray, path: str):
    """The file's time step (data_io.time_step), as a timedelta that adds to the file's time values."""
    step = time_step(times, f"--data {path}")
    return step if np.issubdtype(times.dtype, np.datetime64) else step.astype("timedelta64[us]").item()


def _iso(t) -> str:
    return pd.Timestamp(t).isoformat() if isinstance(t, (np.datetime64, pd.Timestamp)) else t.isoformat()


def _hours(step) -> str:
    return f"{pd.Timedelta(step) / pd.Timedelta(hours=1):g} h"


# ---- the output file -----------------------------------------------------------------------------------------
def _physical(z: np.ndarray, stats: NormStats) -> np.ndarray:
    """Denormalise; log-transformed channels (precipitation) were clipped at 0 on the way in, and are here too."""
    values = denormalize(z.astype("float64"), stats)
    values = np.where(stats.log.reshape(-1, 1, 1), np.maximum(values, 0.0), values)
    return values.astype(np.float32)


def _forecast_dataset(values, data: PreparedData, meta: dict, level_coords: dict, valid, leads, init) -> xr.Dataset:
    """values (time, target channel, lat, lon) -> one CF variable per target, (time, [level,] lat, lon)."""
    coords = {
        "time": ("time", valid, {"standard_name": "time", "long_name": "valid time", "axis": "T"}),
        "lat": ("lat", data.lat, {"standard_name": "latitude", "units": "degrees_north", "axis": "Y"}),
        "lon": ("lon", to_file_convention(data.lon, data.lon_signed),
                {"standard_name": "longitude", "units": "degrees_east", "axis": "X"}),
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
            variables[name] = (("time", dim, "lat", "lon"), values[:, idx], attrs)
        else:
            variables[name] = (("time", "lat", "lon"), values[:, idx[0]], attrs)
    ds = xr.Dataset(variables, coords=coords)
    reference = f"hours since {_iso(init).replace('T', ' ')}"
    for name in ("time", "forecast_reference_time"):
        ds[name].encoding.update(units=reference, dtype="float64")
    for name in ds.coords:
        ds[name].encoding["_FillValue"] = None  # CF: coordinates have no missing values
    ds.attrs.update(
        Conventions="CF-1.8",
        title=f"ConvLSTM forecast of {', '.join(variables)}",
        forecast_reference_time=_iso(init),
    )
    return ds


if __name__ == "__main__":
    main()
