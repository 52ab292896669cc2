"""The on-disk cache: a file's cropped, normalised arrays, written once and memory-mapped by every run after.

A file whose cropped arrays are larger than --cache-threshold-mb is never loaded whole: data_io.pipeline streams
it in time chunks into an entry of this cache instead of into memory,

    CACHE_ROOT/<file stem>-<key>/{inputs,targets[,upstream]}.npy, meta.json, source.json

where CACHE_ROOT is --cache-dir, else $CONVLSTM_TUNE_CACHE, else a .convlstm-cache folder next to the data file
(when that folder is writable), else ~/.cache/convlstm-tune; the key hashes the identity (path, size, mtime) of
every file --data names (each file inside a Zarr store too) and the data config fields that change the arrays.
Every later prepare() with the same files and config —
each trial, the retrain, a rerun — opens the .npy files with mmap_mode='r' without touching the netCDF file, and
processes on one node share them through the page cache. A PreparedData holding them pickles as the folder's
path (see PreparedData.__getstate__), so Ray's object store never gets a copy.

An entry describes itself in meta.json (plain JSON, never pickle: the cache may sit on a shared file system that
others can write). An entry whose meta.json is missing or malformed, whose identity is not this key's, or whose
.npy files disagree with it (shape, dtype, missing, object arrays) is never trusted: prepare() logs why, removes
it and builds it again. Entries are built in a temporary folder and renamed into place, so concurrent builders
do not collide and a crash leaves no half-written entry. Nothing is evicted: delete old entries by hand
(source.json says what each one is).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path

import numpy as np
import xarray as xr

from data_io._errors import DataError
from data_io._files import identity as file_identity
from data_io._files import sources
from data_io._stream import RowFile
from data_io.config import DataConfig
from data_io.normalize import NormStats
from data_io.prepared import PreparedData

log = logging.getLogger(__name__)

CACHE_VERSION = 3  # 2: meta.json instead of meta.pkl; 3: every file of --data in the key
META = "meta.json"
# Fields that do not change the arrays: windows are cut at training time, and the cache's own settings.
_NOT_IN_KEY = {"data", "window_size", "target_offset", "forecast_steps", "cache_threshold_mb", "cache_dir"}


def cache_root(cfg: DataConfig) -> Path:
    if cfg.cache_dir:
        return Path(cfg.cache_dir).expanduser()
    if os.environ.get("CONVLSTM_TUNE_CACHE"):
        return user_cache_dir()
    folder = sources(cfg.data)[0].parent
    if os.access(folder, os.W_OK):
        return folder / ".convlstm-cache"
    return user_cache_dir()


def user_cache_dir() -> Path:
    """The user's cache folder: $CONVLSTM_TUNE_CACHE, else ~/.cache/convlstm-tune (XDG_CACHE_HOME honoured). The
    demo data and the memory pre-flight's per-machine calibrations live here."""
    if os.environ.get("CONVLSTM_TUNE_CACHE"):
        return Path(os.environ["CONVLSTM_TUNE_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "convlstm-tune"


def _identity(cfg: DataConfig, stats: tuple[NormStats, NormStats] | None) -> dict:
    return {
        "version": CACHE_VERSION,
        "files": file_identity(sources(cfg.data)),
        "config": {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name not in _NOT_IN_KEY},
        "stats": [s.to_dict() for s in stats] if stats is not None else None,
    }


def _key(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def entry_dir(cfg: DataConfig, stats: tuple[NormStats, NormStats] | None) -> Path:
    """The entry for this file and config; its name changes when the file or an array-shaping field does."""
    paths = sources(cfg.data)
    stem = paths[0].stem + (f"-and-{len(paths) - 1}" if len(paths) > 1 else "")
    return cache_root(cfg) / f"{stem}-{_key(_identity(cfg, stats))}"


def open_cached(cfg: DataConfig, stats: tuple[NormStats, NormStats] | None = None) -> PreparedData | None:
    """The cached PreparedData for these files and config; None when there is none (or no files).

    A damaged or tampered entry is removed with a log line saying why, and None is returned: the caller builds it.
    """
    try:
        entry = entry_dir(cfg, stats)
    except (DataError, OSError):  # no such files: prepare() opens them and says so in one line
        return None
    if not entry.exists():
        return None
    data, reason = open_entry(entry, cfg, stats)
    if data is None:
        log.warning("Cache entry %s is not usable (%s); removing it and building it again", entry, reason)
        _discard(entry)
        return None
    log.info("Using the cached arrays in %s", entry)
    return data


def open_entry(
    entry: Path, cfg: DataConfig, stats: tuple[NormStats, NormStats] | None
) -> tuple[PreparedData | None, str | None]:
    """(the entry's PreparedData, None), or (None, why the entry cannot be trusted)."""
    file = entry / META
    if not file.is_file():
        old = " (an entry of an older release, described by a pickle, which is never loaded)" if (
            entry / "meta.pkl").exists() else ""
        return None, f"no {META}{old}"
    try:
        raw = json.loads(file.read_text())
        if raw.get("identity") != json.loads(json.dumps(_identity(cfg, stats), default=str)):
            return None, f"{META} describes another file or config"
        meta = _decode(raw)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"{META} is not readable JSON ({type(exc).__name__})"
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return None, f"{META} is malformed ({type(exc).__name__}: {str(exc)[:80]})"
    data = PreparedData.from_meta(cfg, meta, None, cache_dir=str(entry))
    if {k: tuple(v) for k, v in raw["arrays"].items()} != data.array_shapes():
        return None, f"the arrays listed in {META} do not match its coordinates and channels"
    if data.not_local is not None:
        return None, data.not_local
    return data, None


def check_space(entry: Path, need: int, path: str) -> None:
    entry.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(entry.parent).free
    if need > free:
        raise DataError(
            f"{path}: the cropped arrays need {need / 2**30:.1f} GB in the cache folder {entry.parent}, which has "
            f"{free / 2**30:.1f} GB free; point --cache-dir (or $CONVLSTM_TUNE_CACHE) at a larger disk"
        )


class EntryWriter:
    """A new entry being written in a temporary folder: ``files`` are the sinks; commit() renames it into place.

    Used as a context manager: an exception (or no commit) leaves nothing behind.
    """

    def __init__(self, entry: Path, shapes: dict[str, tuple[int, ...]]) -> None:
        self.entry = entry
        self.tmp = entry.parent / f".{entry.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.tmp.mkdir(parents=True)
        self.files = {name: RowFile(self.tmp / f"{name}.npy", shape) for name, shape in shapes.items()}

    def __enter__(self) -> EntryWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)  # after commit() the folder is gone already

    def commit(self, meta: dict, cfg: DataConfig, stats: tuple[NormStats, NormStats] | None) -> None:
        identity = _identity(cfg, stats)
        shapes = {k: list(f.shape) for k, f in self.files.items()}
        doc = {"identity": identity, "arrays": shapes, **_encode(meta)}
        (self.tmp / META).write_text(json.dumps(doc, default=str) + "\n")
        source = {"files": identity["files"], "config": dataclasses.asdict(cfg), "shapes": shapes,
                  "created": time.strftime("%Y-%m-%d %H:%M:%S")}
        (self.tmp / "source.json").write_text(json.dumps(source, indent=1, default=str) + "\n")
        try:
            os.rename(self.tmp, self.entry)
        except OSError:  # another process finished the same entry first: theirs is identical
            pass


def _discard(entry: Path) -> None:
    """Move an entry out of the way first, so no reader maps it while it is deleted."""
    doomed = entry.parent / f".{entry.name}.bad-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        os.rename(entry, doomed)
    except OSError:
        return  # another process removed it already
    shutil.rmtree(doomed, ignore_errors=True)


# ---- meta.json <-> PreparedData.meta() -----------------------------------------------------------------------
def _encode(meta: dict) -> dict:
    out = dict(meta)
    out["times"] = _encode_times(meta["times"])
    for name in ("lat", "lon", "upstream_lat", "upstream_lon"):
        out[name] = None if meta[name] is None else np.asarray(meta[name], dtype="float64").tolist()
    out["input_stats"], out["target_stats"] = meta["input_stats"].to_dict(), meta["target_stats"].to_dict()
    return out


def _decode(raw: dict) -> dict:
    meta = {k: raw[k] for k in ("channels", "target_channels", "target_attrs", "levels", "lon_signed", "stats_given")}
    if not (all(isinstance(c, str) for c in meta["channels"] + meta["target_channels"])
            and isinstance(meta["target_attrs"], dict) and isinstance(meta["levels"], dict)):
        raise TypeError("channels, target_attrs or levels have the wrong type")
    meta["grid"] = raw.get("grid")  # a projected grid's description (plain JSON); absent: a regular grid
    if meta["grid"] is not None and not isinstance(meta["grid"], dict):
        raise TypeError("grid has the wrong type")
    meta["times"] = _decode_times(raw["times"])
    for name in ("lat", "lon", "upstream_lat", "upstream_lon"):
        meta[name] = None if raw[name] is None else np.asarray(raw[name], dtype="float64")
    for name in ("input_stats", "target_stats"):
        meta[name] = NormStats.from_dict(raw[name])
    return meta


def _encode_times(times: np.ndarray) -> dict:
    if np.issubdtype(times.dtype, np.datetime64):
        return {"dtype": str(times.dtype), "values": times.view("int64").tolist()}
    num, units, calendar = xr.coding.times.encode_cf_datetime(times)
    out = {"units": units, "calendar": calendar, "values": np.asarray(num).tolist()}
    if not np.array_equal(_decode_times(out), times):  # cftime dates must come back exactly
        raise DataError(f"the time stamps {times[0]} .. {times[-1]} cannot be stored in the cache's meta.json; "
                        "pass --cache-threshold-mb with a value above the file's size to keep it in memory")
    return out


def _decode_times(raw: dict) -> np.ndarray:
    if "dtype" in raw:
        dtype = np.dtype(raw["dtype"])
        if not np.issubdtype(dtype, np.datetime64):
            raise ValueError(f"times dtype {dtype} is not a datetime64")
        return np.asarray(raw["values"], dtype="int64").view(dtype)
    var = xr.Variable(("time",), np.asarray(raw["values"]), {"units": raw["units"], "calendar": raw["calendar"]})
    coder = xr.coders.CFDatetimeCoder(use_cftime=None)
    return xr.conventions.decode_cf_variable("time", var, decode_times=coder).values
