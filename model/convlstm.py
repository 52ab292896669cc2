"""The one ConvLSTM forecaster (Shi et al. 2015); its topology is configuration (ModelConfig).

Levels: `hidden_channels` lists one ConvLSTM cell per level; the last level is the bottleneck.
- topology "stacked": every level works on the full grid and the head reads the bottleneck (the plain model).
- topology "unet": each level works at half the resolution of the one below (2x2 max-pooling), and a decoder
  climbs back up: per level, the output above is up-sampled, concatenated with this level's encoder output (the
  skip connection) and passed through a ConvLSTM cell. This is graphcast's ConvLSTM U-Net.
Inside a level: GroupNorm on the gates (use_group_norm); after it, on the level's output, self-attention (the
bottleneck only, use_attention), BatchNorm (use_batch_norm) and dropout (spatial or plain), as graphcast orders them.

The upstream stream, when present, is a second encoder over the box whose weather drifts in:
- upstream_fusion "input": it runs every level; its top output, resized to the target grid, is concatenated to the
  downstream input at every step.
- upstream_fusion "bottleneck": it runs the levels below the bottleneck; its output, pooled and resized to the
  bottleneck's grid, is concatenated to the bottleneck's input at every step (graphcast's dual stream).

After the last input step the same cells keep running on empty inputs, one step per forecast lead; a 1x1 head maps
the top output to the target channels at the last input step and at every further lead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from data_io import ConfigError
from model._gates import lstm_gates, uses_kernels
from model._norm import GateNorm
from model.config import ModelConfig

State = list[tuple[torch.Tensor, torch.Tensor]]


class ConvLSTMCell(nn.Module):
    """One convolution computes all four gates from [input, hidden]; GroupNorm on the gates when asked. The gate
    arithmetic is one fused kernel on CUDA (model/_gates.py) unless the forecaster turns `fused` off."""

    def __init__(self, in_channels: int, hidden: int, kernel_size: int, group_norm: bool = False) -> None:
        super().__init__()
        self.hidden, self.fused = hidden, True
        self.gates = nn.Conv2d(in_channels + hidden, 4 * hidden, kernel_size, padding=kernel_size // 2)
        self.norm = GateNorm(_groups(4 * hidden), 4 * hidden) if group_norm else nn.Identity()

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        h, c = state
        z = torch.cat([x, h], dim=1)
        if isinstance(self.norm, nn.Identity) and uses_kernels(z, self.fused):
            # The gate kernel adds the bias and sums its gradient; the convolution's own bias gradient would be
            # one more pass over the gates' gradient. (A norm between them keeps the bias in the convolution.)
            conv = F.conv2d(z, self.gates.weight, None, padding=self.gates.padding)
            return lstm_gates(conv, c, True, self.gates.bias)
        return lstm_gates(self.norm(self.gates(z)), c, self.fused)


class SelfAttention(nn.Module):
    """Non-local self-attention over the grid's cells; gamma starts at 0, so it begins as the identity."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        inner = channels // 8 if channels >= 8 else max(1, channels // 2)
        self.query = nn.Conv2d(channels, inner, 1)
        self.key = nn.Conv2d(channels, inner, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = (m(x).flatten(2) for m in (self.query, self.key, self.value))  # (B, C', N)
        attention = torch.softmax(q.transpose(1, 2) @ k, dim=-1)  # (B, N, N)
        return self.gamma * (v @ attention.transpose(1, 2)).view(b, c, h, w) + x


class ConvLSTMLevels(nn.Module):
    """ConvLSTM cells one above the other, each fed the output of the one below (pooled 2x2 when `pool`).

    `fused_channels` widen the top cell's input: the upstream stream's output joins there (bottleneck fusion).
    """

    def __init__(self, in_channels: int, widths: list[int], config: ModelConfig, pool: bool,
                 rates: list[float], attention: bool = False, fused_channels: int = 0) -> None:
        super().__init__()
        ins = [in_channels, *widths[:-1]]
        ins[-1] += fused_channels
        k, gn = config.kernel_size, config.use_group_norm
        self.cells = nn.ModuleList(ConvLSTMCell(ins[i], widths[i], k, gn) for i in range(len(widths)))
        self.post = nn.ModuleList(
            _level_output(config, w, r, attention and i == len(widths) - 1)
            for i, (w, r) in enumerate(zip(widths, rates))
        )
        self.pool = pool

    def init_state(self, x: torch.Tensor) -> State:
        """Zero (h, c) per level, for input frames shaped like x (B, C, H, W)."""
        b, _, h, w = x.shape
        state = []
        for i, cell in enumerate(self.cells):
            if i and self.pool:
                h, w = h // 2, w // 2
            zeros = x.new_zeros(b, cell.hidden, h, w).contiguous(memory_format=_layout(x))
            state.append((zeros, zeros.clone()))
        return state

    def step(self, x: torch.Tensor, state: State,
             fused: torch.Tensor | None = None) -> tuple[list[torch.Tensor], State]:
        """One time step; returns every level's output (the skip connections) and the new state."""
        outputs, new_state = [], []
        top = len(self.cells) - 1
        for i, (cell, post, s) in enumerate(zip(self.cells, self.post, state)):
            if i and self.pool:
                x = F.max_pool2d(x, 2)
            if i == top and fused is not None:
                fused = F.max_pool2d(fused, 2) if self.pool else fused
                x = torch.cat([x, _resize(fused, x, align_corners=True)], dim=1)
            h, c = cell(x, s)
            new_state.append((h, c))
            x = post(h)
            outputs.append(x)
        return outputs, new_state


class ConvLSTMDecoder(nn.Module):
    """U-Net decoder: from the bottleneck down to level 0, up-sample, concatenate the skip, run a ConvLSTM cell."""

    def __init__(self, widths: list[int], config: ModelConfig, rate: float) -> None:
        super().__init__()
        k, gn = config.kernel_size, config.use_group_norm
        levels = range(len(widths) - 2, -1, -1)
        self.cells = nn.ModuleList(ConvLSTMCell(widths[i + 1] + widths[i], widths[i], k, gn) for i in levels)
        self.post = nn.ModuleList(_level_output(config, widths[i], rate, False) for i in levels)

    def init_state(self, levels: list[torch.Tensor]) -> State:
        """Zero (h, c) per decoder cell, shaped like the encoder outputs it reads as skips."""
        return [(torch.zeros_like(s), torch.zeros_like(s)) for s in reversed(levels[:-1])]

    def step(self, levels: list[torch.Tensor], state: State) -> tuple[torch.Tensor, State]:
        x, new_state = levels[-1], []
        for cell, post, skip, s in zip(self.cells, self.post, reversed(levels[:-1]), state):
            h, c = cell(torch.cat([_resize(x, skip, align_corners=True), skip], dim=1), s)
            new_state.append((h, c))
            x = post(h)
        return x, new_state


class ConvLSTMForecaster(nn.Module):
    def __init__(
        self,
        config: ModelConfig,
        in_channels: int,
        out_channels: int,
        forecast_steps: int = 1,
        upstream_channels: int | None = None,
        fused_gates: bool = True,
    ) -> None:
        super().__init__()
        hidden, unet = list(config.hidden_channels), config.topology == "unet"
        if unet and len(hidden) < 2:
            raise ConfigError(f"--topology unet needs at least 2 --hidden-channels (levels), but got {hidden}")
        if upstream_channels and config.upstream_fusion == "bottleneck" and len(hidden) < 2:
            raise ConfigError(f"--upstream-fusion bottleneck needs at least 2 --hidden-channels (levels below the "
                              f"bottleneck feed it), but got {hidden}; add a level or use --upstream-fusion input")
        self.forecast_steps = forecast_steps
        self.fusion = config.upstream_fusion if upstream_channels else None
        rates = _dropout_rates(config, len(hidden))
        # Built before the downstream stream: the parameters of the plain model keep their initialisation order.
        self.upstream = None
        if self.fusion == "input":
            self.upstream = ConvLSTMLevels(upstream_channels, hidden, config, unet, rates)
        elif self.fusion == "bottleneck":
            self.upstream = ConvLSTMLevels(upstream_channels, hidden[:-1], config, unet, rates[:-1])
        fused_in = hidden[-1] if self.fusion == "input" else 0
        fused_top = hidden[-2] if self.fusion == "bottleneck" else 0
        self.downstream = ConvLSTMLevels(in_channels + fused_in, hidden, config, unet, rates,
                                         attention=config.use_attention, fused_channels=fused_top)
        self.decoder = ConvLSTMDecoder(hidden, config, config.dropout_rate * 0.5 * (config.dropout_levels == "all")) \
            if unet else None
        self.head = nn.Conv2d(hidden[0] if unet else hidden[-1], out_channels, kernel_size=1)
        for cell in self.modules():  # a kernel choice, not architecture: the same parameters either way
            if isinstance(cell, ConvLSTMCell):
                cell.fused = fused_gates

    def forward(self, x: torch.Tensor, upstream: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, C, H, W), upstream (B, T, Cu, Hu, Wu) -> forecast (B, forecast_steps, out, H, W)."""
        n_in = x.shape[1]
        if x.device.type == "cuda" and torch.is_autocast_enabled("cuda"):
            # The frames in autocast's dtype once: every step's convolution would otherwise cast them again.
            dtype = torch.get_autocast_dtype("cuda")
            x, upstream = x.to(dtype), upstream.to(dtype) if upstream is not None else None
        # Channels-last weights (the trainer's --channels-last): frames and states follow, so that no convolution
        # transposes its input to NHWC and back at every step.
        if _layout(self.downstream.cells[0].gates.weight) == torch.channels_last:
            x = _channels_last_frames(x)
            upstream = _channels_last_frames(upstream) if upstream is not None else None
        down_state = self.downstream.init_state(x[:, 0])
        up_state = self.upstream.init_state(upstream[:, 0]) if self.upstream is not None else None
        dec_state = None
        outputs = []
        for t in range(n_in + self.forecast_steps - 1):
            x_t = x[:, t] if t < n_in else torch.zeros_like(x[:, 0])
            fused = None
            if self.upstream is not None:
                up_levels, up_state = self.upstream.step(
                    upstream[:, t] if t < n_in else torch.zeros_like(upstream[:, 0]), up_state)
                fused = up_levels[-1]
            if self.fusion == "input":
                # align_corners=False: the plain model's resize, kept so that its forecasts do not change.
                x_t, fused = torch.cat([x_t, _resize(fused, x_t, align_corners=False)], dim=1), None
            levels, down_state = self.downstream.step(x_t, down_state, fused)
            if t < n_in - 1:
                continue
            top = levels[-1]
            if self.decoder is not None:
                if dec_state is None:  # graphcast's decoder starts from zeros at the forecast
                    dec_state = self.decoder.init_state(levels)
                top, dec_state = self.decoder.step(levels, dec_state)
            outputs.append(self.head(top))
        return torch.stack(outputs, dim=1)


def check_grid(config: ModelConfig, height: int, width: int, box: str = "downstream") -> None:
    """Refuse a grid too small for the U-Net's pooling (every level needs at least one cell)."""
    levels = len(config.hidden_channels)
    if config.topology == "unet" and min(height, width) < 2 ** (levels - 1):
        raise ConfigError(
            f"--topology unet with {levels} levels halves the {box} box's {height}x{width} grid {levels - 1} times, "
            f"leaving no cells: use fewer --hidden-channels (levels), --topology stacked or a larger box")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _level_output(config: ModelConfig, width: int, rate: float, attention: bool) -> nn.Module:
    """What a level's output goes through, in graphcast's order; an empty Sequential is the identity."""
    layers: list[nn.Module] = [SelfAttention(width)] if attention else []
    if config.use_batch_norm:
        layers.append(nn.BatchNorm2d(width))
    if rate > 0:
        layers.append(nn.Dropout2d(rate) if config.use_spatial_dropout else nn.Dropout(rate))
    return nn.Sequential(*layers)


def _dropout_rates(config: ModelConfig, levels: int) -> list[float]:
    """Per level: graphcast's deep models use the rate below the bottleneck and 1.5x at it ("all");
    its two-level dual stream drops out at the bottleneck only ("bottleneck")."""
    r = config.dropout_rate
    if config.dropout_levels == "bottleneck":
        return [0.0] * (levels - 1) + [r]
    return [r] * (levels - 1) + [min(1.5 * r, 0.9)]  # nn.Dropout refuses p >= 1


def _groups(channels: int) -> int:
    """Graphcast's GroupNorm groups: the largest divisor of the channel count up to 16."""
    return next(g for g in range(min(16, channels), 0, -1) if channels % g == 0)


def _layout(x: torch.Tensor) -> torch.memory_format:
    """Channels-last when the channels sit at unit stride: a frame x[:, t] of channels-last frames is, though not
    dense (its batch stride spans every time step), so the states made like it are channels-last too. A 1x1 tensor
    (a 1x1 kernel, a 1x1 grid) is either; it counts as the default."""
    channels_last = x.dim() == 4 and x.shape[1] > 1 and x.stride(1) == 1 and x.shape[2] * x.shape[3] > 1
    return torch.channels_last if channels_last else torch.contiguous_format


def _channels_last_frames(x: torch.Tensor) -> torch.Tensor:
    """(B, T, C, H, W) laid out so that every frame x[:, t] is a channels-last (B, C, H, W) tensor."""
    return x.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)


def _resize(x: torch.Tensor, like: torch.Tensor, align_corners: bool) -> torch.Tensor:
    if x.is_meta:
        # The memory pre-flight's count (model/memory.footprint) needs the shape and what autograd saves, which is
        # nothing for either mode; bilinear's meta form is PyTorch's Python decomposition, 10-100 ms a call.
        return F.interpolate(x, size=like.shape[-2:], mode="nearest")
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=align_corners)
