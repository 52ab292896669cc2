"""Per-channel z-scores fitted on the training split; precipitation-like channels are log1p'd first.

The one fit is ChannelMoments, fed chunk by chunk (a whole array is one chunk).
"""

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
    moments = ChannelMoments([log])
    moments.update(np.asarray(x).reshape(1, 1, -1))
    return moments.results()[0]


class ChannelMoments:
    """Count, mean and sum of squared deviations per channel, in float64, NaNs skipped.

    Chunks are merged with Chan et al.'s pairwise update, so the result equals one pass of np.nanmean/np.nanstd
    over the concatenated chunks (to rounding) without the cancellation of a sum-of-squares formula.
    """

    def __init__(self, log: list[bool]) -> None:
        self.log = list(log)
        n = len(self.log)
        self.count = np.zeros(n, dtype=np.int64)
        self.mean = np.zeros(n, dtype=np.float64)
        self.m2 = np.zeros(n, dtype=np.float64)

    def update(self, chunk: np.ndarray) -> None:
        """chunk: (t, C, H, W) raw values, C in the order of ``log``."""
        for c, is_log in enumerate(self.log):
            x = forward_transform(chunk[:, c].astype(np.float64), is_log)
            x = x[np.isfinite(x)]
            if x.size == 0:
                continue
            n_b, mean_b = x.size, float(x.mean())
            m2_b = float(np.square(x - mean_b).sum())
            n_a = self.count[c]
            n = n_a + n_b
            delta = mean_b - self.mean[c]
            self.mean[c] += delta * n_b / n
            self.m2[c] += m2_b + delta * delta * n_a * n_b / n
            self.count[c] = n

    def results(self) -> list[tuple[float, float]]:
        """(mean, population std) per channel; (nan, nan) for a channel that had no finite value."""
        out = []
        for n, mean, m2 in zip(self.count, self.mean, self.m2):
            out.append((float(mean), float(np.sqrt(m2 / n))) if n else (float("nan"), float("nan")))
        return out


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
