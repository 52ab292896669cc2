"""The in-memory form of a dataset: contiguous float32 arrays plus everything needed to invert them."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from data_io.config import DataConfig
from data_io.normalize import NormStats
from data_io.windows import window_starts

ARRAY_FIELDS = ("inputs", "targets", "upstream")


@dataclass
class PreparedData:
    """One file, cropped, normalised and split; arrays are (time, channel, lat, lon) float32.

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

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if self.cache_dir is not None:
            state.update(dict.fromkeys(ARRAY_FIELDS))
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if self.cache_dir is not None:
            from data_io.cache import reopen  # the cache module imports this one

            reopen(self)

    def starts(self, split: str) -> np.ndarray:
        return window_starts(self.splits[split], self.config)

    @property
    def grid_shape(self) -> tuple[int, int]:
        return self.inputs.shape[-2], self.inputs.shape[-1]

    def nbytes(self) -> int:
        arrays = [self.inputs, self.targets] + ([self.upstream] if self.upstream is not None else [])
        return sum(a.nbytes for a in arrays)
