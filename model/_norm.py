"""GroupNorm on the gates (graphcast's use_group_norm), with its statistics from a reduction that fills the card.

Why: PyTorch's CUDA GroupNorm computes each (sample, group)'s mean and variance in one thread block; at graphcast's
batch of 4 with 16 groups that is 64 blocks for a card of 132 SMs, 89 us a call on an H100 for a tensor it reads in
a few (BENCHMARKS §8, session 11: 13% of the `dual_stream` epoch's GPU time). torch.var_mean splits long rows over
many blocks. The normalisation and affine are then one element-wise pass (x * scale + shift, per sample and
channel), and the backward is PyTorch's own GroupNorm backward kernel, given the same mean and rstd: the same maths,
the same tensors saved (the fp32 input, mean, rstd), so memory and the pre-flight's count do not change.
"""

from __future__ import annotations

import torch
from torch import nn


class GateNorm(nn.GroupNorm):
    """nn.GroupNorm (the same parameters and state-dict keys); on CUDA, for NCHW tensors, computed as above."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cuda and x.is_contiguous() and self.affine and not torch.compiler.is_compiling():
            return _GroupNorm.apply(x, self.weight, self.bias, self.num_groups, self.eps)
        return super().forward(x)


class _GroupNorm(torch.autograd.Function):
    # fp32 inside under autocast, as autocast runs PyTorch's group_norm
    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.float32)
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int,
                eps: float) -> torch.Tensor:
        n, c = x.shape[:2]
        var, mean = torch.var_mean(x.view(n, groups, -1), dim=2, unbiased=False)
        rstd = torch.rsqrt(var + eps)
        scale = rstd.repeat_interleave(c // groups, dim=1) * weight
        shift = bias - mean.repeat_interleave(c // groups, dim=1) * scale
        ctx.save_for_backward(x, mean, rstd, weight)
        ctx.groups = groups
        return torch.addcmul(shift[:, :, None, None], x, scale[:, :, None, None])

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, grad: torch.Tensor):
        x, mean, rstd, weight = ctx.saved_tensors
        n, c = x.shape[:2]
        dx, dw, db = torch.ops.aten.native_group_norm_backward(
            grad.contiguous(), x, mean, rstd, weight, n, c, x[0, 0].numel(), ctx.groups,
            [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]])
        return dx, dw, db, None, None
