"""Forecasts over a period: which initialisation times, and one CF dataset holding them all.

`ForecastConfig` is the forecast's part of the config tree: model.predict's flags and those
run_inference_convlstm.py shares with it are generated from it. `init_indices` turns --init-time, --init-times or
--start-time/--end-time into time indices of the file; `stack_forecasts` puts single-initialisation forecasts
(dim ``time``) into one dataset with dims (forecast_reference_time, forecast_period) and the valid time as the 2-D
coordinate ``time(forecast_reference_time, forecast_period)`` (CF-1.8, the layout of operational forecast archives).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import numpy as np
import pandas as pd
import xarray as xr

from data_io import ConfigError, DataError, time_step

_ISO = re.compile(r"^\s*(-?\d{1,4})-(\d{1,2})-(\d{1,2})(?:[T ](\d{1,2})(?::(\d{2})(?::(\d{2}))?)?)?Z?\s*$")


@dataclass
class ForecastConfig:
    checkpoint: str | None = field(default=None, metadata={"help": "best.pt or last.pt written by the trainer"})
    data: str | list[str] | None = field(
        default=None, metadata={"help": "netCDF file(s), a quoted glob, a folder or a Zarr store (as for training) "
                                        "with the variables, levels and grid of the training data"})
    init_time: str | None = field(
        default=None, metadata={"help": "one initialisation time, ISO (e.g. 2020-03-01T12:00), a time step of "
                                        "--data (default: the file's last time step)"})
    init_times: list[str] | None = field(
        default=None, metadata={"help": "several initialisation times (the last input step of each forecast); "
                                        "graphcast's --specific-times", "aliases": ["--specific-times"]})
    start_time: str | None = field(
        default=None, metadata={"help": "forecast from every time step of --data from this one on (ISO)"})
    end_time: str | None = field(
        default=None, metadata={"help": "... up to and including this one (ISO)"})
    rolling_steps: int = field(
        default=1, metadata={"help": "feed each forecast back as input this many times (multi-variable models)"})
    batch_size: int = field(default=8, metadata={"help": "forecasts computed at once on the device"})
    device: Literal["auto", "cuda", "mps", "cpu"] = field(
        default="auto", metadata={"help": "auto = cuda, then mps, then cpu"})

    def __post_init__(self) -> None:
        # One item is the plain string (messages, the forecast's history), as in DataConfig.
        if isinstance(self.data, (list, tuple)):
            self.data = str(self.data[0]) if len(self.data) == 1 else [str(d) for d in self.data]

    def over_period(self) -> bool:
        return bool(self.init_times or self.start_time or self.end_time)


def check(cfg: ForecastConfig) -> None:
    for name in ("checkpoint", "data"):
        if not getattr(cfg, name):
            raise ConfigError(f"--{name} is required")
    if cfg.init_time and cfg.over_period():
        raise ConfigError("--init-time gives one forecast; drop it, or use --init-times / --start-time --end-time "
                          "alone for many")
    if cfg.init_times and (cfg.start_time or cfg.end_time):
        raise ConfigError("--init-times and --start-time/--end-time both pick initialisation times; give one of them")
    if cfg.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, but got {cfg.batch_size}")


def init_indices(times: np.ndarray, cfg: ForecastConfig, window: int, after: int, path: str,
                 every: bool = False) -> np.ndarray:
    """Time indices of the last input step of every forecast; each has `window` steps up to it and `after` steps
    after it in the file (the observed upstream frames a rolling forecast reads). No time given: the file's last
    step, or with `every` each step that has a full window (graphcast's default)."""
    if not cfg.over_period() and not every:
        end = init_index(times, cfg.init_time, window, path)
        ends = np.array([end])
        flag = f"--init-time {cfg.init_time}" if cfg.init_time else f"--data {path} (its last step)"
    elif cfg.init_times:
        ends = np.array([init_index(times, t, window, path, "--init-times") for t in cfg.init_times])
        flag = "--init-times"
    else:
        lo = parse_time(cfg.start_time, times, "--start-time") if cfg.start_time else None
        hi = parse_time(cfg.end_time, times, "--end-time") if cfg.end_time else None
        inside = [i for i, t in enumerate(times) if i >= window - 1 and (lo is None or t >= lo) and
                  (hi is None or t <= hi) and i + after < len(times)]
        if not inside:
            raise DataError(
                f"{_period_flags(cfg, path)}: no time step of {path} ({iso(times[0])} .. "
                f"{iso(times[-1])}) in that period has the {window} input steps up to it"
                + (f" and {after} observed upstream steps after it" if after else "") + "; widen the period")
        return np.array(inside)
    late = [i for i in ends if i + after >= len(times)]
    if late:
        raise DataError(
            f"{flag}: a rolling forecast from {iso(times[late[0]])} reads the observed upstream box {after} steps "
            f"later, but {path} ends at {iso(times[-1])}; pick {iso(times[len(times) - 1 - after])} or earlier")
    return ends


def _period_flags(cfg: ForecastConfig, path: str) -> str:
    given = [f"--start-time {cfg.start_time}" if cfg.start_time else "", f"--end-time {cfg.end_time}" if cfg.end_time
             else ""]
    return " ".join(g for g in given if g) or f"--data {path}"


def init_index(times: np.ndarray, init_time: str | None, window: int, path: str, flag: str = "--init-time") -> int:
    """Index of the last input step: the file's last step, or `init_time`, with `window` steps up to it."""
    if init_time is None:
        if len(times) < window:
            raise DataError(f"--data {path}: has {len(times)} time step(s) but the model reads {window} "
                            f"(the checkpoint's window_size); pass a file with at least {window} steps")
        return len(times) - 1
    stamp = parse_time(init_time, times, flag)
    hits = [i for i, t in enumerate(times) if t == stamp]
    if not hits:
        raise DataError(
            f"{flag} {init_time}: not a time step of {path} (it has {len(times)} steps, {iso(times[0])} .. "
            f"{iso(times[-1])}, every {hours(file_time_step(times, path))}); pick one of them"
        )
    end = hits[0]
    if end + 1 < window:
        raise DataError(
            f"{flag} {init_time}: the model reads {window} steps up to the initialisation time but {path} "
            f"has only {end + 1} up to it; pick {iso(times[window - 1])} or later"
        )
    return end


def parse_time(text: str, times: np.ndarray, flag: str = "--init-time"):
    """An ISO time as a value comparable with the file's times (numpy datetime64 or cftime)."""
    match = _ISO.match(text)
    if match is None:
        raise ConfigError(f"{flag} {text!r}: not an ISO time; use YYYY-MM-DDTHH:MM (e.g. 2020-03-01T12:00)")
    y, mo, d, h, mi, s = (int(g) if g else 0 for g in match.groups())
    if np.issubdtype(times.dtype, np.datetime64):
        try:
            return np.datetime64(datetime(y, mo, d, h, mi, s)).astype(times.dtype)
        except ValueError as exc:
            raise ConfigError(f"{flag} {text!r}: {exc}; give a valid date") from None
    import cftime

    calendar = getattr(times[0], "calendar", "standard")
    try:
        return cftime.datetime(y, mo, d, h, mi, s, calendar=calendar)
    except ValueError as exc:
        raise ConfigError(f"{flag} {text!r}: {exc} in the file's {calendar} calendar; give a valid date") from None


def file_time_step(times: np.ndarray, path: str):
    """The file's time step (data_io.time_step), as a timedelta that adds to the file's time values."""
    step = time_step(times, f"--data {path}")
    return step if np.issubdtype(times.dtype, np.datetime64) else step.astype("timedelta64[us]").item()


def iso(t) -> str:
    return pd.Timestamp(t).isoformat() if isinstance(t, (np.datetime64, pd.Timestamp)) else t.isoformat()


def hours(step) -> str:
    return f"{pd.Timedelta(step) / pd.Timedelta(hours=1):g} h"


def stack_forecasts(forecasts: list[xr.Dataset]) -> xr.Dataset:
    """Single-initialisation forecasts (dim `time`, coords forecast_period(time) and a scalar
    forecast_reference_time) -> dims (forecast_reference_time, forecast_period), valid time 2-D."""
    leads = [ds["forecast_period"].values for ds in forecasts]
    if any(not np.array_equal(lead, leads[0]) for lead in leads):
        raise ValueError("every forecast must have the same leads to be stacked")
    by_lead = [ds.swap_dims(time="forecast_period").drop_vars("time") for ds in forecasts]
    out = xr.concat(by_lead, dim="forecast_reference_time", coords="minimal", compat="override",
                    combine_attrs="override")
    valid = np.stack([ds["time"].values for ds in forecasts])
    out = out.assign_coords(time=(("forecast_reference_time", "forecast_period"), valid,
                                  dict(forecasts[0]["time"].attrs)))
    out["forecast_reference_time"].attrs = dict(forecasts[0]["forecast_reference_time"].attrs)
    first = iso(out["forecast_reference_time"].values[0])
    for name in ("time", "forecast_reference_time"):
        out[name].encoding = {"units": f"hours since {first.replace('T', ' ')}", "dtype": "float64",
                              "_FillValue": None}
    for name in out.coords:
        out[name].encoding["_FillValue"] = None  # CF: coordinates have no missing values
    out.attrs["forecast_reference_time"] = (f"{first} .. {iso(out['forecast_reference_time'].values[-1])} "
                                            f"({out.sizes['forecast_reference_time']} initialisations)")
    return out
