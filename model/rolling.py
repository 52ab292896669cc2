"""Rolling (autoregressive) forecasts: each forecast is fed back as the model's input for the next step.

Only a model whose targets cover every input channel (``--multi-variable``) can roll: every channel of the next
input window must come from the forecast. Targets and inputs are z-scored with their own statistics (the
checkpoint's ``target_stats`` and ``input_stats``; data_io.pipeline), so a forecast frame is converted exactly:
target z-score -> the transformed physical value -> input z-score, in float64. Precipitation-like (log) channels
were clipped at 0 before log1p on the way in, and are here too (log1p(max(expm1(x), 0)) = max(x, 0)).

The model does not forecast the upstream box: later steps read the observed upstream frames, which the caller
passes as one sequence ``window_size + (steps - 1) * forecast_steps`` frames long.
"""

from __future__ import annotations

import numpy as np
import torch

from data_io import ConfigError, NormStats


def check_rolling(steps: int, channels: list[str], target_channels: list[str], target_offset: int,
                  where: str = "--rolling-steps") -> None:
    """Refuse a rolling forecast the model cannot make, in one line naming the flag."""
    if steps < 1:
        raise ConfigError(f"{where} must be at least 1, but got {steps}")
    if steps == 1:
        return
    missing = [c for c in channels if c not in target_channels]
    if missing:
        raise ConfigError(
            f"{where} {steps}: the model does not forecast every input channel (not {', '.join(missing)}), so its "
            "forecast cannot be fed back; use --rolling-steps 1 or a model trained with --multi-variable"
        )
    if target_offset != 1:
        raise ConfigError(
            f"{where} {steps}: the model forecasts from {target_offset} steps after its last input, which leaves "
            "gaps in the fed-back window; use --rolling-steps 1 or a model trained with --target-offset 1"
        )


class Feedback:
    """Target z-scores (B, F, target channels, H, W) -> input z-scores (B, F, input channels, H, W)."""

    def __init__(self, input_stats: NormStats, target_stats: NormStats, device: torch.device) -> None:
        idx = [target_stats.channels.index(c) for c in input_stats.channels]
        if not np.array_equal(target_stats.log[idx], input_stats.log):
            raise ConfigError("the checkpoint's input and target statistics disagree on which channels are "
                              "log-transformed; retrain the model (it cannot be rolled)")

        def tensor(a):
            return torch.as_tensor(np.asarray(a, dtype="float64"), device=device).view(-1, 1, 1)

        self.idx = torch.as_tensor(idx, device=device)
        self.t_mean, self.t_std = tensor(target_stats.mean[idx]), tensor(target_stats.std[idx])
        self.i_mean, self.i_std = tensor(input_stats.mean), tensor(input_stats.std)
        self.log = torch.as_tensor(input_stats.log, device=device).view(-1, 1, 1)

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        x = z.index_select(-3, self.idx).double() * self.t_std + self.t_mean  # transformed physical value
        x = torch.where(self.log, x.clamp_min(0.0), x)
        return ((x - self.i_mean) / self.i_std).to(z.dtype)


@torch.no_grad()
def rolling_forecast(model: torch.nn.Module, inputs: torch.Tensor, steps: int, input_stats: NormStats,
                     target_stats: NormStats, upstream: torch.Tensor | None = None) -> torch.Tensor:
    """inputs (B, W, C, H, W') normalised as the model reads them -> (B, steps * forecast_steps, target C, H, W'),
    normalised as targets. Step 1 is ``model(inputs, upstream[:, :W])`` itself.

    ``upstream``, when the model has that stream, holds the observed frames (B, W + (steps - 1) * F, ...):
    step k reads frames k*F .. k*F + W - 1.
    """
    window = inputs.shape[1]
    feedback = Feedback(input_stats, target_stats, inputs.device) if steps > 1 else None
    outputs, x = [], inputs
    for k in range(steps):
        up = None
        if upstream is not None:
            start = k * (outputs[0].shape[1] if outputs else 0)
            up = upstream[:, start:start + window]
            if up.shape[1] != window:
                raise ValueError(f"upstream has {upstream.shape[1]} frames; step {k + 1} needs {start + window}")
        z = model(x, up)
        outputs.append(z)
        if k + 1 < steps:
            x = torch.cat([x, feedback(z)], dim=1)[:, -window:]
    return torch.cat(outputs, dim=1)


def upstream_frames_needed(window: int, forecast_steps: int, steps: int) -> int:
    """How many observed upstream frames a rolling forecast of `steps` reads, from its first input frame."""
    return window + (steps - 1) * forecast_steps


@torch.no_grad()
def forecast_windows(model: torch.nn.Module, data, ends: np.ndarray, steps: int, batch_size: int,
                     device: torch.device) -> np.ndarray:
    """Normalised forecasts (N, steps * F, target C, H, W) for windows of `data` (a PreparedData) ending at
    the time indices `ends`, `batch_size` windows at a time on `device`."""
    c = data.config
    w = c.window_size
    n_up = upstream_frames_needed(w, c.forecast_steps, steps)
    out = []
    for b in range(0, len(ends), batch_size):
        chunk = ends[b:b + batch_size]
        # np.array copies: the cache's memmaps are read-only.
        x = torch.from_numpy(np.stack([np.array(data.inputs[e - w + 1:e + 1]) for e in chunk])).to(device)
        up = None
        if data.upstream is not None:
            up = torch.from_numpy(np.stack([np.array(data.upstream[e - w + 1:e - w + 1 + n_up])
                                            for e in chunk])).to(device)
        z = rolling_forecast(model, x, steps, data.input_stats, data.target_stats, up)
        out.append(z.float().cpu().numpy())
    return np.concatenate(out, axis=0)
