"""The prepared form of a dataset: contiguous float32 arrays plus everything needed to invert them.

A value object: it never runs the pipeline that made it (data_io.pipeline). Unpickled, it maps its cache entry's
.npy files again and nothing more; where they are missing it says why in ``not_local`` and the caller decides
(data_io.ensure_local rebuilds, with a log line).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data_io.config import DataConfig
from data_io.normalize import NormStats
from data_io.read import STREAMS
from data_io.windows import split_bounds, window_starts


@dataclass
class PreparedData:
    """One file, cropped, normalised and split; arrays are (time, channel, lat, lon) float32.

    On a regular grid ``lat``/``lon`` are the box's 1-D coordinates; on a projected grid (a regional model's native
    rows and columns) they are the 2-D (rows, cols) latitude and longitude of every cell, and ``grid`` says how the
    file names and defines that grid (data_io._grid.ProjectedGrid.crop), for the forecast writer.

    ``inputs`` has NaNs filled with 0 (the mean); ``targets`` keeps NaNs so losses and metrics can mask them.
    The whole object pickles with numpy buffers out of band, so Ray shares it zero-copy between trials.
    Arrays memory-mapped from the on-disk cache (``cache_dir``, see data_io.cache) pickle as that folder's path
    instead and are mapped again where they are unpickled: trials on a node share them through the page cache.
    """

    config: DataConfig
    inputs: np.ndarray
    targets: np.ndarray
    upstream: np.ndarray | None
    times: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    channels: list[str]
    target_channels: list[str]
    input_stats: NormStats
    target_stats: NormStats
    splits: dict[str, tuple[int, int]]
    upstream_lat: np.ndarray | None = None
    upstream_lon: np.ndarray | None = None
    target_attrs: dict[str, dict] = field(default_factory=dict)
    levels: dict[str, list] = field(default_factory=dict)
    lon_signed: bool = False
    cache_dir: str | None = None  # the cache entry the arrays are memory-mapped from; None: they are in memory
    # True: the statistics came from the caller (e.g. a checkpoint) and the whole file is the test split;
    # False: they were fitted on the train split.
    stats_given: bool = False
    # None, or why this process could not map the cache entry's arrays (they are None); see data_io.ensure_local.
    not_local: str | None = None
    grid: dict | None = None  # None: a regular lat/lon grid

    @classmethod
    def from_meta(
        cls, config: DataConfig, meta: dict, arrays: dict[str, np.ndarray] | None, cache_dir: str | None = None
    ) -> PreparedData:
        """The one constructor: ``meta`` as made by ``meta()``; arrays given (in memory) or mapped from cache_dir."""
        n = len(meta["times"])
        given = bool(meta["stats_given"])
        splits = {"train": (0, 0), "val": (0, 0), "test": (0, n)} if given else split_bounds(
            meta["times"], config, str(config.data))
        arrays = arrays or {}
        data = cls(
            config=config, inputs=arrays.get("inputs"), targets=arrays.get("targets"),
            upstream=arrays.get("upstream"), times=meta["times"], lat=meta["lat"], lon=meta["lon"],
            channels=list(meta["channels"]), target_channels=list(meta["target_channels"]),
            input_stats=meta["input_stats"], target_stats=meta["target_stats"], splits=splits,
            upstream_lat=meta["upstream_lat"], upstream_lon=meta["upstream_lon"], target_attrs=meta["target_attrs"],
            levels=meta["levels"], lon_signed=bool(meta["lon_signed"]), cache_dir=cache_dir, stats_given=given,
            grid=meta.get("grid"),
        )
        if cache_dir is not None:
            data.not_local = data.map_arrays()
        return data

    def meta(self) -> dict:
        """Everything but the arrays and the config's window fields: what a cache entry stores beside its .npy files."""
        return {
            "times": self.times, "lat": self.lat, "lon": self.lon, "channels": list(self.channels),
            "target_channels": list(self.target_channels), "input_stats": self.input_stats,
            "target_stats": self.target_stats, "upstream_lat": self.upstream_lat, "upstream_lon": self.upstream_lon,
            "target_attrs": self.target_attrs, "levels": self.levels, "lon_signed": self.lon_signed,
            "stats_given": self.stats_given, "grid": self.grid,
        }

    def array_shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape each array must have, from the coordinates and channels (upstream only with its box)."""
        n = len(self.times)
        shapes = {"inputs": (n, len(self.channels), *_cells(self.lat, self.lon)),
                  "targets": (n, len(self.target_channels), *_cells(self.lat, self.lon))}
        if self.upstream_lat is not None and self.upstream_lon is not None:
            shapes["upstream"] = (n, len(self.channels), *_cells(self.upstream_lat, self.upstream_lon))
        return shapes

    def map_arrays(self) -> str | None:
        """Memory-map the arrays of ``cache_dir``; None when done, else why not (the arrays are then None).

        Each .npy file must be float32 with the shape the metadata implies; object arrays are never loaded
        (allow_pickle=False), so a planted file cannot run code here.
        """
        mapped: dict[str, np.ndarray] = {}
        for name, shape in self.array_shapes().items():
            file = Path(str(self.cache_dir)) / f"{name}.npy"
            if not file.is_file():
                reason = f"{file} is missing"
                break
            try:
                arr = np.load(file, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as exc:
                reason = f"{file} is not a readable .npy array ({str(exc)[:80]})"
                break
            if arr.dtype != np.float32 or arr.shape != shape:
                reason = f"{file} holds {arr.dtype} {arr.shape}, but the entry describes float32 {shape}"
                break
            mapped[name] = arr
        else:
            reason = None
        for name in STREAMS:
            setattr(self, name, mapped.get(name) if reason is None else None)
        return reason

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if self.cache_dir is not None:
            state.update(dict.fromkeys(STREAMS))
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("stats_given", False)
        self.__dict__.setdefault("not_local", None)
        self.__dict__.setdefault("grid", None)
        if self.cache_dir is not None:
            self.not_local = self.map_arrays()  # only maps: a missing entry is for data_io.ensure_local to rebuild

    def starts(self, split: str) -> np.ndarray:
        return window_starts(self.splits[split], self.config, self.times)

    @property
    def grid_shape(self) -> tuple[int, int]:
        return self.inputs.shape[-2], self.inputs.shape[-1]

    def nbytes(self) -> int:
        arrays = [self.inputs, self.targets] + ([self.upstream] if self.upstream is not None else [])
        return sum(a.nbytes for a in arrays)


def _cells(lat: np.ndarray, lon: np.ndarray) -> tuple[int, int]:
    """(rows, cols) of a box: 2-D coordinates on a projected grid, 1-D latitudes x longitudes on a regular one."""
    lat = np.asarray(lat)
    return (lat.shape[0], lat.shape[1]) if lat.ndim == 2 else (len(lat), len(lon))
