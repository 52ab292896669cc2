"""The training loss: a weighted MSE over the finite targets, as sums that add up exactly over micro-batches and ranks.

    loss = sum over groups g of  group_weight_g * sum_g(w * (pred - y)^2) / sum_g(w)

Groups are the precipitation-like target channels (those log1p'd, data --log-variables) and the others. A cell's
weight w is --high-precip-weight where precipitation exceeds --high-precip-threshold (in physical units, mm), 1
elsewhere, 0 where the target is NaN; per group this is graphcast's weights-normalised-to-unit-mean MSE. With other
channels predicted too (--multi-variable), precipitation's group weight is --precip-loss-weight and the others' 1, as
graphcast's MultiVariableLoss adds `precip_loss_weight * precip_loss + atmos_loss`.

Exact under accumulation: the weight sums of a whole optimizer step are known before it runs (per_step_weights reads
them off the target array), so dividing every micro-batch's sums by them gives the gradient of one batch holding the
step's windows, on one process or on N.
"""

from __future__ import annotations

import numpy as np
import torch

from data_io import NormStats
from model.config import TrainConfig


class ForecastLoss:
    def __init__(self, train: TrainConfig, stats: NormStats, device: torch.device | str = "cpu") -> None:
        precip = np.asarray(stats.log, dtype=bool)
        self.groups = [g for g in (np.flatnonzero(precip), np.flatnonzero(~precip)) if len(g)]
        both = len(self.groups) == 2
        self.group_weights = np.array([train.precip_loss_weight if both and precip[g[0]] else 1.0
                                       for g in self.groups])
        self.heavy_weight = float(train.high_precip_weight)
        # The threshold in normalised units, so no step has to denormalise; +inf: never heavy rain.
        z = (np.log1p(train.high_precip_threshold) - np.asarray(stats.mean)) / np.asarray(stats.std)
        self.thresholds = np.where(precip, z, np.inf).astype(np.float32)
        self._device = torch.device(device)
        self._thresholds = torch.as_tensor(self.thresholds, device=self._device).view(-1, 1, 1)
        self._scale = torch.as_tensor(self.group_weights, dtype=torch.float32, device=self._device)
        self._groups = [torch.as_tensor(g, device=self._device) for g in self.groups]

    @property
    def weighted(self) -> bool:
        return self.heavy_weight != 1.0

    def _weights_np(self, y: np.ndarray) -> np.ndarray:
        """Cell weights of targets (..., C, H, W) in float64; the same decisions as `sums` makes in float32."""
        w = np.isfinite(y).astype(np.float64)
        if self.weighted:
            w *= np.where(y > self.thresholds.reshape(-1, 1, 1), self.heavy_weight, 1.0)
        return w

    def per_step_weights(self, targets: np.ndarray) -> np.ndarray:
        """(time, group) weight sums of the target array (time, C, H, W), read in slices (it may be memory-mapped)."""
        out = np.empty((len(targets), len(self.groups)), dtype=np.float64)
        for i in range(0, len(targets), 1024):
            w = self._weights_np(np.asarray(targets[i : i + 1024], dtype=np.float32))
            for j, g in enumerate(self.groups):
                out[i : i + len(w), j] = w[:, g].reshape(len(w), -1).sum(axis=1)
        return out

    def sums(self, pred: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Weighted squared errors and weights, summed per group: two (group,) tensors for (B, lead, C, H, W)."""
        finite = torch.isfinite(y)
        diff = torch.where(finite, pred.float() - torch.nan_to_num(y.float()), 0.0)
        se, w = diff * diff, finite.float()
        if self.weighted:
            heavy = torch.where(y > self._thresholds, self.heavy_weight, 1.0)
            se, w = se * heavy, w * heavy
        if len(self.groups) == 1:
            return se.sum().view(1), w.sum().view(1)
        return (torch.stack([se.index_select(2, g).sum() for g in self._groups]),
                torch.stack([w.index_select(2, g).sum() for g in self._groups]))

    def factors(self, totals: np.ndarray, scale: float = 1.0) -> np.ndarray:
        """(group,) multipliers of a micro-batch's group sums: `(sums * factors).sum()` is `value(sums, totals, scale)`,
        precomputed so a step needs no host work (CUDA graphs replay it)."""
        return (self.group_weights.astype(np.float32) * np.float32(scale) / np.maximum(totals, 1.0)).astype(np.float32)

    def value(self, sse: torch.Tensor, totals: torch.Tensor | np.ndarray, scale: float = 1.0) -> torch.Tensor:
        """The loss from group sums and the group weight totals they are divided by (a step's, or an epoch's)."""
        totals = torch.as_tensor(np.maximum(np.asarray(totals, dtype=np.float64), 1.0) if isinstance(totals, np.ndarray)
                                 else totals.clamp_min(1.0), device=sse.device)
        return (sse * (self._scale.to(sse.device) * scale / totals).float()).sum()
