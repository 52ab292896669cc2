"""Chronological splits and the sample windows inside them."""

from __future__ import annotations

import numpy as np

from data_io._errors import ConfigError, DataError
from data_io.config import DataConfig

SPLITS = ("train", "val", "test")


def window_span(cfg: DataConfig) -> int:
    """Time steps one sample touches: the inputs plus the last forecast step."""
    return cfg.window_size + cfg.target_offset + cfg.forecast_steps - 1


def split_bounds(times: np.ndarray, cfg: DataConfig, path: str) -> dict[str, tuple[int, int]]:
    """[start, stop) time indices of train/val/test, in time order."""
    n = len(times)
    if cfg.test_start_date is not None:
        test_start = int(np.searchsorted(_comparable(times), _parse_date(cfg.test_start_date, times)))
        if test_start <= 0 or test_start >= n:
            raise ConfigError(
                f"--test-start-date {cfg.test_start_date}: outside the file's time range "
                f"{times[0]} .. {times[-1]}; pick a date inside it"
            )
        frac = cfg.train_ratio / (cfg.train_ratio + cfg.val_ratio)
        train_stop = int(round(test_start * frac))
    else:
        train_stop = int(round(n * cfg.train_ratio))
        test_start = int(round(n * (cfg.train_ratio + cfg.val_ratio)))
    bounds = {"train": (0, train_stop), "val": (train_stop, test_start), "test": (test_start, n)}
    need = window_span(cfg)
    for name in ("train", "val"):
        start, stop = bounds[name]
        if stop - start < need:
            raise DataError(
                f"{path}: the {name} split has {stop - start} time steps but one window needs {need} "
                f"(--window-size {cfg.window_size} + --target-offset {cfg.target_offset} + "
                f"--forecast-steps {cfg.forecast_steps} - 1); use a longer file or a smaller --window-size"
            )
    return bounds


def window_starts(bounds: tuple[int, int], cfg: DataConfig) -> np.ndarray:
    """First time index of every window that lies wholly inside [start, stop)."""
    start, stop = bounds
    return np.arange(start, max(start, stop - window_span(cfg) + 1), dtype=np.int64)


def _comparable(times: np.ndarray) -> np.ndarray:
    if np.issubdtype(times.dtype, np.datetime64):
        return times
    return np.array([t.toordinal(fractional=True) if hasattr(t, "toordinal") else t for t in times])


def _parse_date(text: str, times: np.ndarray):
    try:
        stamp = np.datetime64(text)
    except ValueError:
        raise ConfigError(f"--test-start-date {text!r}: not a date; use YYYY-MM-DD") from None
    if np.issubdtype(times.dtype, np.datetime64):
        return stamp.astype(times.dtype)
    import cftime

    y, m, d = (int(p) for p in str(stamp.astype("datetime64[D]")).split("-"))
    cal = getattr(times[0], "calendar", "standard")
    return cftime.datetime(y, m, min(d, 30) if cal == "360_day" else d, calendar=cal).toordinal(
        fractional=True
    )
