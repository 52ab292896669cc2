"""Reading netCDF files into training windows."""

from data_io._errors import ConfigError, DataError, UserInputError
from data_io.config import DataConfig
from data_io.netcdf import open_dataset, prepare
from data_io.normalize import NormStats
from data_io.prepared import PreparedData
from data_io.windows import SPLITS, window_span, window_starts

__all__ = [
    "SPLITS",
    "ConfigError",
    "DataConfig",
    "DataError",
    "NormStats",
    "PreparedData",
    "UserInputError",
    "open_dataset",
    "prepare",
    "window_span",
    "window_starts",
]
