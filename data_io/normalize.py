"""Per-channel z-scores fitted on the training split; precipitation-like channels are log1p'd first."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class NormStats:
    """Statistics for a list of channels; stored in every checkpoint so forecasts can be denormalised."""

    channels: list[str]
    mean: np.ndarray  # (C,) float64, in transformed space
    std: np.ndarray  # (C,) float64
    log: np.ndarray  # (C,) bool: clip at 0 and log1p before z-scoring

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> NormStats:
        return cls(
            channels=list(d["channels"]),
            mean=np.asarray(d["mean"], dtype="float64"),
            std=np.asarray(d["std"], dtype="float64"),
            log=np.asarray(d["log"], dtype=bool),
        )

    def select(self, channels: list[str]) -> NormStats:
        idx = [self.channels.index(c) for c in channels]
        return NormStats(list(channels), self.mean[idx], self.std[idx], self.log[idx])


def forward_transform(x: np.ndarray, log: bool) -> np.ndarray:
    return np.log1p(np.clip(x, 0.0, None)) if log else x


def fit_channel(x: np.ndarray, log: bool) -> tuple[float, float]:
    """Mean and std of one channel (any shape, NaNs ignored) after the log transform."""
    x = forward_transform(x.astype("float64", copy=False), log)
    if not np.isfinite(x).any():  # all NaN: the caller reports it (nanmean would only warn)
        return float("nan"), float("nan")
    mean = float(np.nanmean(x))
    std = float(np.nanstd(x))
    return mean, std


def normalize_inplace(arr: np.ndarray, stats: NormStats) -> None:
    """arr (T, C, H, W) float32 -> z-scores, in place, channel by channel to bound peak memory.

    The inverse is model.metrics.denormalize (tensors on the device, or arrays)."""
    for c in range(arr.shape[1]):
        view = arr[:, c]
        if stats.log[c]:
            np.clip(view, 0.0, None, out=view)
            np.log1p(view, out=view)
        view -= np.float32(stats.mean[c])
        view /= np.float32(stats.std[c])
