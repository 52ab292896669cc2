"""The one place a model is built from its config: the trainer and checkpoint loading both call it."""

from __future__ import annotations

from model.config import Config
from model.convlstm import ConvLSTMForecaster


def model_from_config(config: Config, in_channels: int, out_channels: int, upstream: bool) -> ConvLSTMForecaster:
    """The architecture `config.model` describes, for data of `in_channels` inputs and `out_channels` targets;
    `upstream` adds the stream of the box upstream, which carries the same channels as the inputs."""
    return ConvLSTMForecaster(
        config.model,
        in_channels=in_channels,
        out_channels=out_channels,
        forecast_steps=config.data.forecast_steps,
        upstream_channels=in_channels if upstream else None,
        fused_gates=config.train.fused_gates,
    )
