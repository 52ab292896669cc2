"""Chronological splits and the sample windows inside them.

A window is a run of window_span(cfg) consecutive steps exactly one time step apart (the file's most common
spacing, data_io.time_step): a window across a gap or an irregular step is dropped, in every split.
"""

from __future__ import annotations

import logging

import numpy as np

from data_io._errors import ConfigError, DataError
from data_io.config import DataConfig
from data_io.read import regular_steps, spacings, time_step

log = logging.getLogger(__name__)

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
    if n >= need and not window_starts((0, n), cfg, times).size:
        raise DataError(
            f"{path}: no {need} consecutive time steps are one time step ({_text(time_step(times))}) apart, so "
            f"no window is usable (spacings found: {spacing_summary(times)}); fill the gaps or use a smaller "
            "--window-size"
        )
    for name in ("train", "val"):
        start, stop = bounds[name]
        if stop - start < need:
            raise DataError(
                f"{path}: the {name} split has {stop - start} time steps but one window needs {need} "
                f"(--window-size {cfg.window_size} + --target-offset {cfg.target_offset} + "
                f"--forecast-steps {cfg.forecast_steps} - 1); use a longer file or a smaller --window-size"
            )
        if not window_starts(bounds[name], cfg, times).size:
            raise DataError(
                f"{path}: the {name} split ({_stamp(times[start])} .. {_stamp(times[stop - 1])}) holds no {need} "
                f"consecutive steps one time step ({_text(time_step(times))}) apart; fill its gaps or move the split "
                "with --train-ratio/--val-ratio/--test-start-date"
            )
    return bounds


def window_starts(bounds: tuple[int, int], cfg: DataConfig, times: np.ndarray | None = None) -> np.ndarray:
    """First time index of every window that lies wholly inside [start, stop) (and, given the time-ordered
    ``times``, whose steps are all exactly one time step apart)."""
    start, stop = bounds
    span = window_span(cfg)
    starts = np.arange(start, max(start, stop - span + 1), dtype=np.int64)
    if times is None or starts.size == 0 or len(times) < 2:
        return starts
    irregular = np.concatenate([[0], np.cumsum(~regular_steps(times))])
    return starts[irregular[starts + span - 1] == irregular[starts]]


def log_dropped_windows(times: np.ndarray, cfg: DataConfig, bounds: dict[str, tuple[int, int]], path: str) -> int:
    """Log how many windows a gap or an irregular step dropped, and the largest gaps; returns that count."""
    dropped = {name: len(window_starts(b, cfg)) - len(window_starts(b, cfg, times)) for name, b in bounds.items()}
    total = sum(dropped.values())
    if total:
        diffs, step, regular = spacings(times), time_step(times), regular_steps(times)
        worst = np.argsort(-np.abs(diffs - step).astype("int64"), kind="stable")
        gaps = ", ".join([f"{_stamp(times[i])} -> {_stamp(times[i + 1])} ({_text(diffs[i])})"
                          for i in worst if not regular[i]][:3])
        log.warning(
            "%s: dropped %d window(s) that span a gap or an irregular step (time step %s; %s); largest gaps: %s",
            path, total, _text(step), ", ".join(f"{k} {v}" for k, v in dropped.items()), gaps,
        )
    return total


def spacing_summary(times: np.ndarray) -> str:
    """The spacings between consecutive steps with their counts, most common first: '6h x 40, 2d x 1'."""
    values, counts = np.unique(spacings(times), return_counts=True)
    order = np.argsort(-counts, kind="stable")
    return ", ".join(f"{_text(values[i])} x {counts[i]}" for i in order[:6]) + (" ..." if len(values) > 6 else "")


def _stamp(t) -> str:
    return str(np.datetime64(t, "s")) if isinstance(t, np.datetime64) else str(t)


def _text(delta: np.timedelta64) -> str:
    seconds = int(delta / np.timedelta64(1, "s"))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


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
