"""prepare(): open -> select -> read in time chunks -> a sink -> statistics -> normalise -> PreparedData.

The sink is an array in memory (MemoryRows) or, for cropped arrays above --cache-threshold-mb, a new entry of the
on-disk cache (data_io.cache); everything else — the reads, the one statistics fit, the normalisation, the
PreparedData constructor — is the same code for both.

(The module is not named ``prepare``: ``data_io.prepare`` is the function, which would hide a module of that name
from ``import data_io.prepare as m`` and from mock paths.)
"""

from __future__ import annotations

import logging
import time

import numpy as np
import xarray as xr

from data_io import cache
from data_io._errors import ConfigError, DataError
from data_io._files import data_label, sources
from data_io._stream import MemoryRows, RowFile, time_chunks
from data_io.config import DataConfig, validate
from data_io.normalize import ChannelMoments, NormStats, normalize_inplace
from data_io.prepared import PreparedData
from data_io.read import STREAMS, Selection, open_dataset, read_block, select, small_chunk_cache, variable_of
from data_io.windows import log_dropped_windows, split_bounds

log = logging.getLogger(__name__)

CHUNK_BYTES = 32 * 2**20  # cropped bytes read per time chunk (all arrays together)
Sinks = dict[str, "MemoryRows | RowFile"]


def prepare(cfg: DataConfig, stats: tuple[NormStats, NormStats] | None = None) -> PreparedData:
    """cfg.data as normalised float32 arrays: in memory, or memory-mapped from the on-disk cache.

    With ``stats`` (input, target), e.g. a checkpoint's, nothing is fitted and the file need not be long enough
    for the train/val splits: the whole file is the "test" split, normalised with the given statistics.
    """
    validate(cfg)
    if cfg.data is None:
        raise ConfigError("--data is missing; pass a netCDF file (python -m data_io.demo writes one)")
    path = data_label(cfg.data)
    cached = cache.open_cached(cfg, stats)  # files cached before are not opened again
    if cached is not None:
        return cached
    with small_chunk_cache(len(sources(cfg.data))), open_dataset(cfg.data) as ds:
        sel = select(ds, cfg, path)
        n = len(sel.times)
        shapes = {name: s.shape(n) for name, s in sel.streams.items()}
        if sel.nbytes() <= cfg.cache_threshold_mb * 2**20:
            sinks = {name: MemoryRows(shape) for name, shape in shapes.items()}
            meta = _fill(ds, sel, cfg, stats, sinks)
            return PreparedData.from_meta(cfg, meta, {name: s.array for name, s in sinks.items()})

        # Too big for memory: the same pipeline into memory-mapped files on disk.
        entry = cache.entry_dir(cfg, stats)
        cache.check_space(entry, sel.nbytes(), path)
        log.info("Caching the cropped, normalised arrays of %s (%.0f MB) in %s", path, sel.nbytes() / 2**20, entry)
        started = time.perf_counter()
        with cache.EntryWriter(entry, shapes) as writer:
            meta = _fill(ds, sel, cfg, stats, writer.files)
            writer.commit(meta, cfg, stats)
    log.info("Cached in %.1f s", time.perf_counter() - started)
    data, reason = cache.open_entry(entry, cfg, stats)
    if data is None:
        raise DataError(f"{entry}: the cache entry just written cannot be read back ({reason}); "
                        "check the disk of --cache-dir")
    return data


def ensure_local(data: PreparedData) -> PreparedData:
    """``data`` with its arrays present in this process: rebuilt here, with a log line, when unpickling could not map
    them (a Ray worker on a node without the driver's cache entry). Call it where a worker receives the data."""
    if data.not_local is None:
        return data
    log.warning("Rebuilding the prepared arrays of %s on this node, because %s", data.config.data, data.not_local)
    stats = (data.input_stats, data.target_stats) if data.stats_given else None
    try:
        fresh = prepare(data.config, stats)
    except DataError as exc:
        raise DataError(
            f"{data.cache_dir}: the cached arrays are not on this node and rebuilding them failed ({exc}); put the "
            "data file, or --cache-dir, on storage every node mounts at the same path"
        ) from None
    same = (fresh.channels == data.channels and len(fresh.times) == len(data.times)
            and all(np.array_equal(getattr(fresh, s).mean, getattr(data, s).mean)
                    for s in ("input_stats", "target_stats")))
    if not same:
        raise DataError(f"{data.config.data}: this node's copy differs from the one the run started with; "
                        "give every node the same file")
    for name in STREAMS:
        setattr(data, name, getattr(fresh, name))
    data.cache_dir, data.not_local = fresh.cache_dir, None
    return data


def _fill(
    ds: xr.Dataset, sel: Selection, cfg: DataConfig, stats: tuple[NormStats, NormStats] | None, sinks: Sinks
) -> dict:
    """Stream the selection into the sinks, fit (or check) the statistics, normalise; PreparedData.meta() back."""
    path, n = sel.path, len(sel.times)
    in_channels, tgt_channels = sel.streams["inputs"].channels, sel.streams["targets"].channels
    if stats is not None:
        in_stats, tgt_stats = (_given(s, c, path) for s, c in zip(stats, (in_channels, tgt_channels)))
        train_stop = val_stop = 0
        log_dropped_windows(sel.times, cfg, {"test": (0, n)}, path)
    else:
        splits = split_bounds(sel.times, cfg, path)
        train_stop, val_stop = splits["train"][1], splits["val"][1]
        log_dropped_windows(sel.times, cfg, splits, path)
    logged = set(cfg.log_variables)
    moments = {k: ChannelMoments([variable_of(c) in logged for c in sel.streams[k].channels])
               for k in ("inputs", "targets")}

    # Pass 1 over the file: raw cropped rows into the sinks; moments of the training rows.
    row_of, target_seen = sel.row_of, False
    for t0, t1 in time_chunks(n, sel.row_bytes(), CHUNK_BYTES):
        rows_at = row_of[t0:t1]
        in_train = rows_at < train_stop
        for name, sink in sinks.items():
            rows = read_block(ds, sel, name, t0, t1)
            sink.write(rows_at, rows)
            if name in moments and in_train.any():
                moments[name].update(rows if in_train.all() else rows[in_train])
            if name == "targets" and not target_seen:
                target_seen = bool(np.isfinite(rows[rows_at < val_stop]).any())
        del rows

    if stats is None:
        if not target_seen:
            raise DataError(f"{path}: the target {sel.streams['targets'].variables} is NaN everywhere in the box; "
                            "pick another --target")
        in_stats = _checked_stats(in_channels, logged, moments["inputs"].results(), path)
        tgt_stats = _checked_stats(tgt_channels, logged, moments["targets"].results(), path)

    # Pass 2 over the sinks: z-scores in place. NaNs in the inputs become 0 (the mean); the upstream box uses the
    # inputs' statistics, which keeps the two boxes comparable.
    for name, sink in sinks.items():
        norm = tgt_stats if name == "targets" else in_stats
        for t0, t1 in time_chunks(n, sink.row_bytes, CHUNK_BYTES):
            rows = sink.read(t0, t1)
            normalize_inplace(rows, norm)
            if name != "targets":
                np.nan_to_num(rows, copy=False, nan=0.0)
            sink.rewrite(t0, rows)
        sink.close()

    (lat, lon), up = sel.coords("targets"), sel.coords("upstream") if "upstream" in sel.streams else (None, None)
    tgt = sel.streams["targets"]
    return {
        "times": sel.times, "lat": lat, "lon": lon,
        "channels": in_channels, "target_channels": tgt_channels, "input_stats": in_stats, "target_stats": tgt_stats,
        "upstream_lat": up[0], "upstream_lon": up[1],
        "target_attrs": sel.target_attrs, "levels": sel.levels, "lon_signed": sel.lon_signed,
        "stats_given": stats is not None,
        "grid": sel.grid.crop(tgt.lat_idx, tgt.lon_idx) if sel.grid is not None else None,
    }


def _given(stats: NormStats, channels: list[str], path: str) -> NormStats:
    """Statistics fitted elsewhere must describe exactly the channels read from this file, in order."""
    if list(stats.channels) != channels:
        raise DataError(
            f"{path}: the channels read ({', '.join(channels)}) differ from those of the given statistics "
            f"({', '.join(stats.channels)}); use a file with the same variables and levels"
        )
    return stats


def _checked_stats(channels: list[str], logged: set[str], fitted: list[tuple[float, float]], path: str) -> NormStats:
    """NormStats from each channel's (mean, std), refusing channels that cannot be z-scored."""
    mean, std, log_flags = [], [], []
    for name, (m, s) in zip(channels, fitted):
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
        log_flags.append(variable_of(name) in logged)
    return NormStats(channels, np.array(mean), np.array(std), np.array(log_flags, dtype=bool))
