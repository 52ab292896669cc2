"""Checkpoints: written atomically, self-describing (config + normalisation + grid), loadable anywhere."""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch

from data_io import ConfigError, NormStats
from model.config import Config, SECTIONS
from model.convlstm import ConvLSTMForecaster


def save_atomic(state: dict, path: str | Path) -> Path:
    """Write to a temp file in the same folder, fsync, rename: a crash leaves the old file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such checkpoint; pass a .pt file written by the trainer")
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise ConfigError(f"{path}: not a readable checkpoint ({type(exc).__name__}); "
                          "pass best.pt or last.pt") from None


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def config_from_checkpoint(ckpt: dict) -> Config:
    from model._cli import build

    return build(Config, {k: ckpt["config"][k] for k in SECTIONS}, "checkpoint config")


def model_from_checkpoint(ckpt: dict) -> ConvLSTMForecaster:
    """Rebuild the architecture from the stored config and meta, then load the weights."""
    config, meta = config_from_checkpoint(ckpt), ckpt["meta"]
    model = ConvLSTMForecaster(
        config.model,
        in_channels=len(meta["channels"]),
        out_channels=len(meta["target_channels"]),
        forecast_steps=config.data.forecast_steps,
        upstream_channels=len(meta["channels"]) if meta["upstream_shape"] else None,
    )
    model.load_state_dict(ckpt["model"])
    return model


def stats_from_checkpoint(ckpt: dict) -> tuple[NormStats, NormStats]:
    return NormStats.from_dict(ckpt["input_stats"]), NormStats.from_dict(ckpt["target_stats"])
