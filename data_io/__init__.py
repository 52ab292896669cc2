"""Reading netCDF files (one, many, or a Zarr store) into training windows: open -> select -> read in time chunks
-> memory or cache -> normalise.

Modules, lowest first: read (open, select, read blocks, channel names, time step), prepared (PreparedData),
cache (the on-disk entries), pipeline (prepare, ensure_local).
"""

from data_io._errors import ConfigError, DataError, UserInputError
from data_io._files import data_label, sources
from data_io.cache import user_cache_dir
from data_io.config import DataConfig
from data_io.normalize import NormStats
from data_io.pipeline import ensure_local, prepare
from data_io.prepared import PreparedData
from data_io.read import channel_name, open_dataset, spacings, time_step, variable_of
from data_io.windows import SPLITS, window_span, window_starts

__all__ = [
    "SPLITS",
    "ConfigError",
    "DataConfig",
    "DataError",
    "NormStats",
    "PreparedData",
    "UserInputError",
    "channel_name",
    "data_label",
    "ensure_local",
    "open_dataset",
    "prepare",
    "sources",
    "spacings",
    "time_step",
    "user_cache_dir",
    "variable_of",
    "window_span",
    "window_starts",
]
