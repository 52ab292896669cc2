"""ConvLSTM encoder-forecaster (Shi et al. 2015) with an optional upstream encoder stream.

The downstream stream reads the target box; the upstream stream, when present, reads the box whose weather
drifts in. At every input step the upstream stream's top hidden state is resized to the downstream grid and
concatenated to the downstream input, so the target box "sees" what is coming. After the last input step the
same cells keep running on empty inputs, one step per forecast lead, and a 1x1 head maps the top hidden
state to the target channels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.config import ModelConfig


class ConvLSTMCell(nn.Module):
    """One convolution computes all four gates from [input, hidden]."""

    def __init__(self, in_channels: int, hidden: int, kernel_size: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.gates = nn.Conv2d(in_channels + hidden, 4 * hidden, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        h, c = state
        i, f, g, o = self.gates(torch.cat([x, h], dim=1)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


class ConvLSTMStack(nn.Module):
    def __init__(self, in_channels: int, hidden: list[int], kernel_size: int) -> None:
        super().__init__()
        widths = [in_channels, *hidden]
        self.cells = nn.ModuleList(ConvLSTMCell(widths[i], widths[i + 1], kernel_size) for i in range(len(hidden)))

    def init_state(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Zero (h, c) per layer, shaped like the input frame x (B, C, H, W)."""
        b, _, h, w = x.shape
        return [(x.new_zeros(b, c.hidden, h, w), x.new_zeros(b, c.hidden, h, w)) for c in self.cells]

    def step(self, x: torch.Tensor, state: list) -> tuple[torch.Tensor, list]:
        new_state = []
        for cell, s in zip(self.cells, state):
            x, c = cell(x, s)
            new_state.append((x, c))
        return x, new_state


class ConvLSTMForecaster(nn.Module):
    def __init__(
        self,
        config: ModelConfig,
        in_channels: int,
        out_channels: int,
        forecast_steps: int = 1,
        upstream_channels: int | None = None,
    ) -> None:
        super().__init__()
        hidden, k = list(config.hidden_channels), config.kernel_size
        self.forecast_steps = forecast_steps
        self.upstream = ConvLSTMStack(upstream_channels, hidden, k) if upstream_channels else None
        fused = in_channels + (hidden[-1] if self.upstream is not None else 0)
        self.downstream = ConvLSTMStack(fused, hidden, k)
        self.head = nn.Conv2d(hidden[-1], out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor, upstream: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, C, H, W), upstream (B, T, Cu, Hu, Wu) -> forecast (B, forecast_steps, out, H, W)."""
        size = x.shape[-2:]
        down_state = self.downstream.init_state(x[:, 0])
        up_state = self.upstream.init_state(upstream[:, 0]) if self.upstream is not None else None
        for t in range(x.shape[1]):
            up_h = None
            if self.upstream is not None:
                up_h, up_state = self.upstream.step(upstream[:, t], up_state)
            top, down_state = self.downstream.step(self._fused(x[:, t], up_h, size), down_state)
        outputs = [self.head(top)]
        for _ in range(1, self.forecast_steps):
            up_h = None
            if self.upstream is not None:
                up_h, up_state = self.upstream.step(torch.zeros_like(upstream[:, 0]), up_state)
            top, down_state = self.downstream.step(self._fused(torch.zeros_like(x[:, 0]), up_h, size), down_state)
            outputs.append(self.head(top))
        return torch.stack(outputs, dim=1)

    def _fused(self, x_t: torch.Tensor, up_h: torch.Tensor | None, size) -> torch.Tensor:
        if up_h is None:
            return x_t
        return torch.cat([x_t, F.interpolate(up_h, size=size, mode="bilinear", align_corners=False)], dim=1)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
