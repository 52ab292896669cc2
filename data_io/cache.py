"""The on-disk cache: a file's cropped, normalised arrays, written once and memory-mapped by every run after.

A file whose cropped arrays are larger than --cache-threshold-mb is never loaded whole. It is read in time chunks
(only the boxes leave the file), the normalisation statistics are accumulated over the training split in the
same pass (float64, NaN-aware, log1p first for precipitation-like channels), and the arrays go to .npy files in

    CACHE_ROOT/<file stem>-<key>/{inputs,targets[,upstream]}.npy, meta.pkl, source.json

where CACHE_ROOT is --cache-dir, else $CONVLSTM_TUNE_CACHE, else a .convlstm-cache folder next to the data file
(when that folder is writable), else ~/.cache/convlstm-tune; the key hashes the file's identity (path, size,
mtime) and the data config fields that change the arrays. Every later prepare() with the same file and config —
each trial, the retrain, a rerun — opens the .npy files with mmap_mode='r' without touching the netCDF file, and
processes on one node share them through the page cache. A PreparedData holding them pickles as the folder's
path (see PreparedData.__getstate__), so Ray's object store never gets a copy.

Entries are built in a temporary folder and renamed into place, so concurrent builders do not collide and a
crash leaves no half-written entry. Nothing is evicted: delete old entries by hand (source.json says what each
one is).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import pickle
import shutil
import time
import uuid
from pathlib import Path
from typing import NamedTuple

import numpy as np
import xarray as xr

from data_io._errors import ConfigError, DataError
from data_io._stream import ChannelMoments, RowFile, time_chunks
from data_io.config import DataConfig
from data_io.normalize import NormStats, normalize_inplace
from data_io.prepared import ARRAY_FIELDS, PreparedData
from data_io.windows import split_bounds

log = logging.getLogger(__name__)

CACHE_VERSION = 1
# Fields that do not change the arrays: windows are cut at training time, and the cache's own settings.
_NOT_IN_KEY = {"data", "window_size", "target_offset", "forecast_steps", "cache_threshold_mb", "cache_dir"}
CHUNK_BYTES = 32 * 2**20  # cropped bytes read per time chunk (all arrays together)
# netCDF-C gives every variable a 64 MB HDF5 chunk cache by default: 400 MB for the reference schema, of no use to
# reads that visit each chunk once (ours, in memory or streamed). prepare() opens files with this much instead.
NC_CHUNK_CACHE_BYTES = 4 * 2**20


class Selection(NamedTuple):
    """What prepare() decided to read: time order, variables, and the boxes as index arrays."""

    times: np.ndarray  # in time order
    order: np.ndarray | None  # file row of each time-ordered step (None: the file is in order)
    inputs: list[str]
    targets: list[str]
    lat_idx: np.ndarray
    lon_idx: np.ndarray
    up_idx: tuple[np.ndarray, np.ndarray] | None


def cache_root(cfg: DataConfig) -> Path:
    if cfg.cache_dir:
        return Path(cfg.cache_dir).expanduser()
    if os.environ.get("CONVLSTM_TUNE_CACHE"):
        return Path(os.environ["CONVLSTM_TUNE_CACHE"]).expanduser()
    folder = Path(str(cfg.data)).resolve().parent
    if os.access(folder, os.W_OK):
        return folder / ".convlstm-cache"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "convlstm-tune"


def entry_dir(cfg: DataConfig, stats: tuple[NormStats, NormStats] | None) -> Path:
    """The entry for this file and config; its name changes when the file or an array-shaping field does."""
    path = Path(str(cfg.data))
    st = path.stat()
    identity = {
        "version": CACHE_VERSION,
        "file": str(path.resolve()),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "config": {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name not in _NOT_IN_KEY},
        "stats": [s.to_dict() for s in stats] if stats is not None else None,
    }
    key = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return cache_root(cfg) / f"{path.stem}-{key}"


def open_cached(cfg: DataConfig, stats: tuple[NormStats, NormStats] | None = None) -> PreparedData | None:
    """The cached PreparedData for this file and config, or None when there is none (or no file)."""
    if cfg.data is None or not os.path.isfile(str(cfg.data)):
        return None
    entry = entry_dir(cfg, stats)
    if not (entry / "meta.pkl").is_file():
        return None
    log.info("Using the cached arrays in %s", entry)
    return open_entry(entry, cfg)


def cropped_bytes(ds: xr.Dataset, sel: Selection) -> int:
    """Bytes of the float32 arrays prepare() would make (inputs, targets, upstream)."""

    def channels(names):
        return sum(int(np.prod([ds.sizes[d] for d in ds[n].dims if d not in ("time", "lat", "lon")])) for n in names)

    box = len(sel.lat_idx) * len(sel.lon_idx)
    up = len(sel.up_idx[0]) * len(sel.up_idx[1]) if sel.up_idx else 0
    return 4 * len(sel.times) * (channels(sel.inputs) * (box + up) + channels(sel.targets) * box)


def use_cache(ds: xr.Dataset, cfg: DataConfig, sel: Selection) -> bool:
    if cfg.cache_threshold_mb < 0:
        raise ConfigError(f"--cache-threshold-mb must be 0 or more, but got {cfg.cache_threshold_mb}")
    return cropped_bytes(ds, sel) > cfg.cache_threshold_mb * 2**20


def build(
    ds: xr.Dataset, cfg: DataConfig, path: str, stats: tuple[NormStats, NormStats] | None, sel: Selection
) -> PreparedData:
    """Stream the selection into a new cache entry and open it."""
    entry = entry_dir(cfg, stats)
    entry.parent.mkdir(parents=True, exist_ok=True)
    need, free = cropped_bytes(ds, sel), shutil.disk_usage(entry.parent).free
    if need > free:
        raise DataError(
            f"{path}: the cropped arrays need {need / 2**30:.1f} GB in the cache folder {entry.parent}, which has "
            f"{free / 2**30:.1f} GB free; point --cache-dir (or $CONVLSTM_TUNE_CACHE) at a larger disk"
        )
    log.info("Caching the cropped, normalised arrays of %s (%.0f MB) in %s", path, need / 2**20, entry)
    started = time.perf_counter()
    tmp = entry.parent / f".{entry.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        _write_entry(ds, cfg, path, stats, sel, tmp)
        try:
            os.rename(tmp, entry)
        except OSError:  # another process finished the same entry first: theirs is identical
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("Cached in %.1f s", time.perf_counter() - started)
    return open_entry(entry, cfg)


def open_entry(entry: Path, cfg: DataConfig) -> PreparedData:
    with open(entry / "meta.pkl", "rb") as f:
        meta = pickle.load(f)
    arrays = {name: np.load(entry / f"{name}.npy", mmap_mode="r") for name in meta["arrays"]}
    n = len(meta["times"])
    splits = {"train": (0, 0), "val": (0, 0), "test": (0, n)} if meta["stats_given"] else split_bounds(
        meta["times"], cfg, str(cfg.data))
    return PreparedData(
        config=cfg, inputs=arrays["inputs"], targets=arrays["targets"], upstream=arrays.get("upstream"),
        times=meta["times"], lat=meta["lat"], lon=meta["lon"], channels=meta["channels"],
        target_channels=meta["target_channels"], input_stats=NormStats.from_dict(meta["input_stats"]),
        target_stats=NormStats.from_dict(meta["target_stats"]), splits=splits, upstream_lat=meta["upstream_lat"],
        upstream_lon=meta["upstream_lon"], target_attrs=meta["target_attrs"], levels=meta["levels"],
        lon_signed=meta["lon_signed"], cache_dir=str(entry),
    )


def reopen(data: PreparedData) -> None:
    """Map a just-unpickled PreparedData's arrays again: from its entry, or rebuilt here if this node lacks it."""
    entry = Path(data.cache_dir)
    if not (entry / "meta.pkl").is_file():
        from data_io.netcdf import prepare

        log.info("%s is not on this node: building it from %s", entry, data.config.data)
        given = data.splits["train"] == (0, 0)  # only statistics passed in leave the train split empty
        try:
            fresh = prepare(data.config, (data.input_stats, data.target_stats) if given else None)
        except DataError as exc:
            raise DataError(
                f"{entry}: the cached arrays are not on this node and rebuilding them failed ({exc}); put the data "
                "file, or --cache-dir, on storage every node mounts at the same path"
            ) from None
        if fresh.channels != data.channels or len(fresh.times) != len(data.times):
            raise DataError(f"{data.config.data}: this node's copy differs from the one the run started with; "
                            "give every node the same file")
        for name in ARRAY_FIELDS:
            setattr(data, name, getattr(fresh, name))
        data.cache_dir = fresh.cache_dir
        return
    for name in ARRAY_FIELDS:
        file = entry / f"{name}.npy"
        setattr(data, name, np.load(file, mmap_mode="r") if file.is_file() else None)


@contextlib.contextmanager
def small_chunk_cache():
    """Files opened inside get NC_CHUNK_CACHE_BYTES of HDF5 chunk cache per variable (netCDF4 engine).

    HDF5 shares one cache between all handles of a dataset, so the first open of a file in a process decides.
    """
    import netCDF4

    saved = netCDF4.get_chunk_cache()
    netCDF4.set_chunk_cache(NC_CHUNK_CACHE_BYTES, 521, 0.75)
    try:
        yield
    finally:
        netCDF4.set_chunk_cache(*saved)


def _write_entry(ds, cfg, path, stats, sel: Selection, folder: Path) -> None:
    from data_io import netcdf  # netcdf calls into this module; import it at call time

    n = len(sel.times)
    row_of = np.arange(n) if sel.order is None else np.argsort(sel.order)  # file row -> time-ordered row
    streams = {"inputs": (sel.inputs, sel.lat_idx, sel.lon_idx), "targets": (sel.targets, sel.lat_idx, sel.lon_idx)}
    if sel.up_idx is not None:
        streams["upstream"] = (sel.inputs, *sel.up_idx)

    # One time step of each stream gives the channel names and shapes (and fails fast on foreign statistics).
    first = ds.isel(time=slice(0, 1))
    info = {name: netcdf._read(first, names, lat, lon, None, path)[1:] for name, (names, lat, lon) in streams.items()}
    if stats is not None:
        in_stats, tgt_stats = (netcdf._given(s, info[k][0], path) for s, k in zip(stats, ("inputs", "targets")))
        splits = {"train": (0, 0), "val": (0, 0), "test": (0, n)}
    else:
        splits = split_bounds(sel.times, cfg, path)
    logged = set(cfg.log_variables)
    moments = {k: ChannelMoments([c.split("@")[0] in logged for c in info[k][0]]) for k in ("inputs", "targets")}
    files = {
        name: RowFile(folder / f"{name}.npy", (n, len(info[name][0]), len(lat), len(lon)))
        for name, (_, lat, lon) in streams.items()
    }

    # Pass 1 over the file: raw cropped rows to disk; moments of the training rows.
    train_stop, val_stop = splits["train"][1], splits["val"][1]
    target_seen = False
    for t0, t1 in time_chunks(n, sum(f.row_bytes for f in files.values()), CHUNK_BYTES):
        chunk, rows_at = ds.isel(time=slice(t0, t1)), row_of[t0:t1]
        for name, (names, lat, lon) in streams.items():
            rows = netcdf._read(chunk, names, lat, lon, None, path)[0]
            files[name].write(rows_at, rows)
            in_train = rows_at < train_stop
            if stats is None and name in moments and in_train.any():
                moments[name].update(rows if in_train.all() else rows[in_train])
            if stats is None and name == "targets" and not target_seen:
                target_seen = bool(np.isfinite(rows[rows_at < val_stop]).any())
        del chunk, rows

    if stats is None:
        if not target_seen:
            raise DataError(f"{path}: the target {sel.targets} is NaN everywhere in the box; pick another --target")
        in_stats = netcdf._checked_stats(info["inputs"][0], logged, moments["inputs"].results(), path)
        tgt_stats = netcdf._checked_stats(info["targets"][0], logged, moments["targets"].results(), path)

    # Pass 2 over the cache: z-scores in place; NaNs in the inputs become 0 (the mean), as in memory.
    for name, file in files.items():
        norm = tgt_stats if name == "targets" else in_stats
        for t0, t1 in time_chunks(n, file.row_bytes, CHUNK_BYTES):
            rows = file.read(t0, t1)
            normalize_inplace(rows, norm)
            if name != "targets":
                np.nan_to_num(rows, copy=False, nan=0.0)
            file.rewrite(t0, rows)
        file.close()

    lat, lon = ds["lat"].values, ds["lon"].values
    meta = {
        "arrays": list(files),
        "times": sel.times,
        "lat": lat[sel.lat_idx].astype("float64"),
        "lon": lon[sel.lon_idx].astype("float64"),
        "channels": info["inputs"][0],
        "target_channels": info["targets"][0],
        "input_stats": in_stats.to_dict(),
        "target_stats": tgt_stats.to_dict(),
        "upstream_lat": lat[sel.up_idx[0]].astype("float64") if sel.up_idx else None,
        "upstream_lon": lon[sel.up_idx[1]].astype("float64") if sel.up_idx else None,
        "target_attrs": {v: {k: str(a) for k, a in ds[v].attrs.items()} for v in sel.targets},
        "levels": info["inputs"][1],
        "lon_signed": bool(ds.attrs.get("_lon_was_signed", 0)),
        "stats_given": stats is not None,
    }
    with open(folder / "meta.pkl", "wb") as f:
        pickle.dump(meta, f)
    st = Path(path).stat()
    source = {"file": str(Path(path).resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
              "config": dataclasses.asdict(cfg), "shapes": {k: list(f.shape) for k, f in files.items()},
              "created": time.strftime("%Y-%m-%d %H:%M:%S")}
    (folder / "source.json").write_text(json.dumps(source, indent=1, default=str) + "\n")
