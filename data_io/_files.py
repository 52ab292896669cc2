"""What ``--data`` names: one file, several, a glob, a folder of netCDF files, or a Zarr store -> a list of paths.

The one resolver every entry point uses (prepare, the cache key, model.predict, tune.retrain), so the forms of
``--data`` mean the same everywhere.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path

from data_io._errors import DataError

NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf", ".cdf")
_GLOB_CHARS = set("*?[")
_ZARR_MARKERS = (".zgroup", ".zarray", "zarr.json")


def is_zarr(path: Path) -> bool:
    """A folder that is a Zarr store (v2 or v3 metadata at its root)."""
    return path.is_dir() and any((path / m).is_file() for m in _ZARR_MARKERS)


def sources(data: str | os.PathLike | Sequence[str | os.PathLike] | None) -> list[Path]:
    """Every file (or Zarr store) ``--data`` names, in a stable order and each once.

    Each item is a file, a Zarr store, a folder (its netCDF files; the folder itself when it is a Zarr store) or a
    glob pattern (sorted matches). Anything that names nothing is one DataError line.
    """
    if data is None:
        raise DataError("--data is missing; pass a netCDF file (python -m data_io.demo writes one)")
    items = [data] if isinstance(data, (str, os.PathLike)) else list(data)
    if not items:
        raise DataError("--data is empty; pass a netCDF file, several files, a glob, a folder or a Zarr store")
    out: dict[Path, None] = {}
    for item in items:
        for path in _expand(str(item)):
            out.setdefault(path.resolve(), None)
    return list(out)


def data_label(data: str | os.PathLike | Sequence[str | os.PathLike] | None) -> str:
    """``--data`` as the user wrote it, for messages (a list as its items joined by spaces)."""
    if data is None or isinstance(data, (str, os.PathLike)):
        return str(data)
    return " ".join(map(str, data))


def identity(paths: list[Path]) -> list[list]:
    """[path, size, mtime_ns] of every file, the files inside a Zarr store included: what the cache key hashes."""
    out = []
    for path in paths:
        files = [path] if not path.is_dir() else sorted(
            Path(root) / f for root, _, names in os.walk(path) for f in names)
        for file in files:
            st = file.stat()
            out.append([str(file), st.st_size, st.st_mtime_ns])
    return out


def _expand(item: str) -> list[Path]:
    path = Path(item).expanduser()
    if path.exists():
        if path.is_dir() and not is_zarr(path):
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in NETCDF_SUFFIXES and p.is_file())
            if not found:
                raise DataError(f"--data {item}: a folder without netCDF (*.nc) files and not a Zarr store; "
                                "pass a folder of .nc files, a Zarr store or the files themselves")
            return found
        return [path]
    if _GLOB_CHARS & set(item):
        found = sorted(Path(p) for p in glob.glob(os.path.expanduser(item)))
        if not found:
            raise DataError(f"--data {item}: the pattern matches no file; check the folder and the pattern")
        return [p for m in found for p in (_expand(str(m)) if m.is_dir() else [m])]
    raise DataError(f"--data {item}: no such file or folder; pass a netCDF file, a glob, a folder or a Zarr store")
