"""Metrics as small pure functions on tensors; every one accepts NaN truth and masks it.

Shapes follow the trainer: (batch, lead, channel, lat, lon). Sums are returned (not means) so that callers
can accumulate over batches on the device without a host sync, then divide once per epoch.
"""

from __future__ import annotations

import numpy as np
import torch

from data_io import NormStats


def latitude_weights(lat: np.ndarray) -> np.ndarray:
    """cos(latitude), normalised to mean 1: (lat,) over a regular grid's rows, or (y, x) over a projected grid's
    cells (each cell's own latitude). Either broadcasts against (..., lat, lon) in weighted_errors."""
    w = np.cos(np.deg2rad(np.asarray(lat, dtype="float64")))
    return w / w.mean()


def masked_sse(pred: torch.Tensor, truth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of squared errors over the finite truth values, and how many there were."""
    mask = torch.isfinite(truth)
    diff = torch.where(mask, pred.float() - torch.nan_to_num(truth.float()), 0.0)
    return (diff * diff).sum(), mask.sum()


def denormalize(z: torch.Tensor | np.ndarray, stats: NormStats | tuple[torch.Tensor, ...]) -> torch.Tensor | np.ndarray:
    """Invert the z-score (and log1p) per channel, the channel axis being -3: the one inverse of
    data_io.normalize_inplace.

    z is a tensor (computed in float32, or float64 if it is float64) or a NumPy array (computed in float64, returned
    as an array). stats is a NormStats, or its (mean, std, log) as tensors already on z's device, which the trainer
    and the scorer keep so that no copy is made per batch.
    """
    if isinstance(z, np.ndarray):
        return denormalize(torch.from_numpy(np.asarray(z, dtype="float64")), stats).numpy()
    if isinstance(stats, NormStats):
        stats = tuple(torch.as_tensor(np.array(a), device=z.device) for a in (stats.mean, stats.std, stats.log))
    mean, std, log = stats
    dtype = torch.float64 if z.dtype == torch.float64 else torch.float32
    shape = (-1, 1, 1)
    x = z.to(dtype) * std.to(dtype).view(shape) + mean.to(dtype).view(shape)
    # expm1 of a non-log channel (geopotential ~1e4) overflows to inf, but where() never selects it.
    return torch.where(log.view(shape), torch.expm1(x), x)


def weighted_errors(
    pred: torch.Tensor, truth: torch.Tensor, lat_weights: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Latitude-weighted squared and absolute error sums per (lead, channel), and the weight sums.

    ``lat_weights`` is (lat,) per row of a regular grid or (lat, lon) per cell of a projected one.
    """
    w = (lat_weights.view(-1, 1) if lat_weights.ndim == 1 else lat_weights) * torch.isfinite(truth)
    err = torch.where(w > 0, pred.float() - torch.nan_to_num(truth.float()), 0.0)
    dims = [d for d in range(err.ndim) if d not in (1, 2)]
    return (w * err * err).sum(dims), (w * err.abs()).sum(dims), w.sum(dims)


def rmse(sse: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(sse / weight.clamp_min(1e-12))


def mae(sae: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return sae / weight.clamp_min(1e-12)


def climatology(values: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """Mean over time of `values` (time, ...) per group label in 0..n_groups-1 (e.g. calendar month - 1).

    NaNs are ignored; a group (or a cell of it) with no finite value is NaN. Returns (n_groups, ...).
    """
    values = np.asarray(values, dtype="float64")
    groups = np.asarray(groups)
    if groups.shape != values.shape[:1] or (groups.size and not 0 <= groups.min() <= groups.max() < n_groups):
        span = f"{groups.min()}..{groups.max()}" if groups.size else "empty"
        raise ValueError(f"groups must be ({values.shape[0]},) labels in 0..{n_groups - 1}, "
                         f"but got shape {groups.shape} with values {span}")
    finite = np.isfinite(values)
    sums = np.zeros((n_groups, *values.shape[1:]))
    counts = np.zeros((n_groups, *values.shape[1:]))
    np.add.at(sums, groups, np.where(finite, values, 0.0))
    np.add.at(counts, groups, finite)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / counts, np.nan)
