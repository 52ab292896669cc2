"""The ConvLSTM, its trainer and the config tree."""

from model.config import Config, ModelConfig, TrainConfig
from model.convlstm import ConvLSTMForecaster
from model.errors import Diverged, OutOfMemory, is_oom
from model.trainer import EpochRecord, fit

__all__ = [
    "Config",
    "ConvLSTMForecaster",
    "Diverged",
    "EpochRecord",
    "ModelConfig",
    "OutOfMemory",
    "TrainConfig",
    "fit",
    "is_oom",
]
