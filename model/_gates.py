"""The LSTM cell's gate arithmetic, `c' = sigmoid(f) c + sigmoid(i) tanh(g)` and `h = sigmoid(o) tanh(c')`.

Why a kernel of its own: in PyTorch's element-wise ops this is about ten kernels forward and fifteen backward, each
a full pass over the (B, 4H, Y, X) gates in memory, plus the casts autocast adds around them; at the reference
workload they took more GPU time than the convolutions (BENCHMARKS §8). On CUDA, with Triton (which ships with
PyTorch's CUDA wheels), one kernel reads the gates and the old cell state and writes h and c'; the backward kernel
recomputes the activations from the same two inputs and writes the gates' and the old state's gradients. Autograd
saves those two tensors only, fewer than the element-wise ops save.

Same maths in both paths; the kernels compute in fp32 whatever the storage dtype: h is stored in autocast's dtype
(bf16: the next convolution reads it in bf16 anyway), else in the gates', and c' in the old state's (fp32, where the
sum over time accumulates). Any memory layout works: NCHW and channels-last tensors (and channel slices of them, which
is how a gradient arrives through the next step's concatenation) take 2-D tiles that read each row contiguously; any
other layout takes a kernel that addresses every element by its four indices and strides.
Under torch.compile the element-wise path is used, since inductor fuses it itself.
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl

    try:
        from triton.language.extra import libdevice
    except ImportError:  # older Triton
        from triton.language.extra.cuda import libdevice
except ImportError:  # CPU-only or MPS installs of torch come without Triton
    triton = None


def lstm_gates(gates: torch.Tensor, c: torch.Tensor, fused: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(h, c') from the pre-activation gates (B, 4H, Y, X), chunked as i, f, g, o, and the cell state (B, H, Y, X)."""
    # On the meta device (model/memory.footprint counts what autograd saves) the fused path runs without its kernels.
    if fused and (gates.is_meta or gates.is_cuda and triton is not None) and not torch.compiler.is_compiling():
        # Under autocast h is stored in its dtype (bf16), which the next convolution reads without a cast.
        h_dtype = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else gates.dtype
        return _FusedGates.apply(gates, c, h_dtype)
    i, f, g, o = gates.chunk(4, dim=1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def fused_available() -> bool:
    return triton is not None and torch.cuda.is_available()


_BLOCK = 1024


class _FusedGates(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gates: torch.Tensor, c: torch.Tensor, h_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        # The outputs take the cell state's layout; the kernel walks them in memory order.
        h_new = torch.empty_like(c, dtype=h_dtype)
        c_new = torch.empty_like(c)
        if not gates.is_meta:
            _launch(_forward_kernel, gates, c, (h_new, c_new))
        ctx.save_for_backward(gates, c)
        return h_new, c_new

    @staticmethod
    def backward(ctx, dh: torch.Tensor | None, dc: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, None]:
        gates, c = ctx.saved_tensors
        dh = torch.zeros_like(c) if dh is None else dh
        dc = torch.zeros_like(c) if dc is None else dc
        d_gates = torch.empty_like(gates)
        d_c = torch.empty_like(c)
        _launch(_backward_kernel, gates, c, (dh, dc, d_gates, d_c))
        return d_gates, d_c, None


def _launch(kernel, gates: torch.Tensor, c: torch.Tensor, others: tuple[torch.Tensor, ...]) -> None:
    b, hidden, y, x = c.shape
    if gates.numel() >= 2**31:
        raise ValueError(f"fused gates: {tuple(gates.shape)} has 2**31 elements or more; use --no-fused-gates")
    tensors = (gates, c, *others)
    strides = [s for t in tensors for s in t.stride()]
    channels_last = c.stride(1) == 1 and hidden > 1
    rows = _rows_layout(tensors, prefer_channels_last=channels_last)
    if rows is None:  # no dimension of unit stride in common: address every element by its four indices
        _strided[kernel][(triton.cdiv(c.numel(), _BLOCK),)](
            *tensors, c.numel(), hidden, y, x, *strides, CHANNELS_LAST=channels_last, BLOCK=_BLOCK)
        return
    # A 2-D tile: rows are (b, channel) with the pixels along a row (NCHW), or pixels with the channels along a row
    # (channels-last); each row's indices are divided out once, not once per element, and a row is read contiguously.
    n_rows, n_cols = (b * y * x, hidden) if rows == "pixels" else (b * hidden, y * x)
    block_cols = min(1024, triton.next_power_of_2(n_cols))
    block_rows = max(1, _BLOCK // block_cols)
    gate_steps = [hidden * t.stride(1) for t in tensors if t.shape[1] == 4 * hidden]  # gate k at k * step
    kernel[(triton.cdiv(n_rows, block_rows), triton.cdiv(n_cols, block_cols))](
        *tensors, n_rows, n_cols, hidden, y, x, *strides, *gate_steps,
        CHANNELS_LAST=rows == "pixels", BLOCK_R=block_rows, BLOCK_C=block_cols)


def _rows_layout(tensors: tuple[torch.Tensor, ...], prefer_channels_last: bool) -> str | None:
    """"pixels" when every tensor has its channels at unit stride (channels-last, or a channel slice of it),
    "channels" when every tensor has its y, x plane dense (NCHW, or a channel slice of it), else None."""
    def plane_dense(t: torch.Tensor) -> bool:
        _, _, y, x = t.shape
        return (t.stride(3) == 1 or x == 1) and (t.stride(2) == x or y == 1)

    def channels_dense(t: torch.Tensor) -> bool:
        return t.stride(1) == 1 or t.shape[1] == 1

    order = (("pixels", channels_dense), ("channels", plane_dense))
    for name, dense in order if prefer_channels_last else order[::-1]:
        if all(dense(t) for t in tensors):
            return name
    return None


if triton is not None:
    @triton.jit
    def _index(offs, H, Y, X, CHANNELS_LAST: tl.constexpr):
        """(b, k, y, x) of the linear positions `offs` in the cell state's memory order."""
        if CHANNELS_LAST:
            k = offs % H
            rest = offs // H
            xx = rest % X
            rest = rest // X
            yy = rest % Y
            bb = rest // Y
        else:
            xx = offs % X
            rest = offs // X
            yy = rest % Y
            rest = rest // Y
            k = rest % H
            bb = rest // H
        return bb, k, yy, xx

    @triton.jit
    def _at(bb, k, yy, xx, s0, s1, s2, s3):
        return bb.to(tl.int64) * s0 + k.to(tl.int64) * s1 + yy.to(tl.int64) * s2 + xx.to(tl.int64) * s3

    @triton.jit
    def _load_gates(g_ptr, bb, k, yy, xx, H, gs0, gs1, gs2, gs3, mask):
        base = _at(bb, k, yy, xx, gs0, gs1, gs2, gs3)
        step = _at(bb * 0, k * 0 + H, yy * 0, xx * 0, gs0, gs1, gs2, gs3)  # H channels on, in int64
        i = tl.load(g_ptr + base, mask=mask).to(tl.float32)
        f = tl.load(g_ptr + base + step, mask=mask).to(tl.float32)
        g = tl.load(g_ptr + base + 2 * step, mask=mask).to(tl.float32)
        o = tl.load(g_ptr + base + 3 * step, mask=mask).to(tl.float32)
        return tl.sigmoid(i), tl.sigmoid(f), _tanh(g), tl.sigmoid(o)

    @triton.jit
    def _tanh(v):
        return libdevice.tanh(v)

    @triton.jit
    def _strided_forward(g_ptr, c_ptr, h_out, c_out, n, H, Y, X,
                        gs0, gs1, gs2, gs3, cs0, cs1, cs2, cs3, hs0, hs1, hs2, hs3, os0, os1, os2, os3,
                        CHANNELS_LAST: tl.constexpr, BLOCK: tl.constexpr):
        # Positions in int32 (n < 2**31, checked in _launch): int64 division is many times slower on a GPU.
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        bb, k, yy, xx = _index(offs, H, Y, X, CHANNELS_LAST)
        i, f, g, o = _load_gates(g_ptr, bb, k, yy, xx, H, gs0, gs1, gs2, gs3, mask)
        c = tl.load(c_ptr + _at(bb, k, yy, xx, cs0, cs1, cs2, cs3), mask=mask).to(tl.float32)
        c_new = f * c + i * g
        h = o * _tanh(c_new)
        tl.store(h_out + _at(bb, k, yy, xx, hs0, hs1, hs2, hs3), h.to(h_out.dtype.element_ty), mask=mask)
        tl.store(c_out + _at(bb, k, yy, xx, os0, os1, os2, os3), c_new.to(c_out.dtype.element_ty), mask=mask)

    @triton.jit
    def _strided_backward(g_ptr, c_ptr, dh_ptr, dc_ptr, dg_out, dc_out, n, H, Y, X,
                         gs0, gs1, gs2, gs3, cs0, cs1, cs2, cs3, hs0, hs1, hs2, hs3, ds0, ds1, ds2, ds3,
                         es0, es1, es2, es3, fs0, fs1, fs2, fs3,
                         CHANNELS_LAST: tl.constexpr, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        bb, k, yy, xx = _index(offs, H, Y, X, CHANNELS_LAST)
        i, f, g, o = _load_gates(g_ptr, bb, k, yy, xx, H, gs0, gs1, gs2, gs3, mask)
        c = tl.load(c_ptr + _at(bb, k, yy, xx, cs0, cs1, cs2, cs3), mask=mask).to(tl.float32)
        dh = tl.load(dh_ptr + _at(bb, k, yy, xx, hs0, hs1, hs2, hs3), mask=mask).to(tl.float32)
        dc_new = tl.load(dc_ptr + _at(bb, k, yy, xx, ds0, ds1, ds2, ds3), mask=mask).to(tl.float32)
        tc = _tanh(f * c + i * g)
        dc_sum = dc_new + dh * o * (1.0 - tc * tc)
        d_i = dc_sum * g * i * (1.0 - i)
        d_f = dc_sum * c * f * (1.0 - f)
        d_g = dc_sum * i * (1.0 - g * g)
        d_o = dh * tc * o * (1.0 - o)
        base = _at(bb, k, yy, xx, es0, es1, es2, es3)
        step = _at(bb * 0, k * 0 + H, yy * 0, xx * 0, es0, es1, es2, es3)
        ty = dg_out.dtype.element_ty
        tl.store(dg_out + base, d_i.to(ty), mask=mask)
        tl.store(dg_out + base + step, d_f.to(ty), mask=mask)
        tl.store(dg_out + base + 2 * step, d_g.to(ty), mask=mask)
        tl.store(dg_out + base + 3 * step, d_o.to(ty), mask=mask)
        tl.store(dc_out + _at(bb, k, yy, xx, fs0, fs1, fs2, fs3), (dc_sum * f).to(dc_out.dtype.element_ty), mask=mask)

    @triton.jit
    def _row_base(r, H, Y, X, s0, s1, s2, s3, CHANNELS_LAST: tl.constexpr):
        """Offset of each row's first element, in int64: a tensor may be a slice of a larger buffer."""
        if CHANNELS_LAST:  # rows are pixels (b, y, x)
            xx = r % X
            rest = r // X
            return (rest // Y).to(tl.int64) * s0 + (rest % Y).to(tl.int64) * s2 + xx.to(tl.int64) * s3
        return (r // H).to(tl.int64) * s0 + (r % H).to(tl.int64) * s1  # rows are (b, channel)

    @triton.jit
    def _tile(R, C, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
        r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
        j = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        return r, j[None, :], (r < R)[:, None] & (j < C)[None, :]

    @triton.jit
    def _load_tiled_gates(g_ptr, r, j, H, Y, X, gs0, gs1, gs2, gs3, step, mask, CHANNELS_LAST: tl.constexpr):
        base = _row_base(r, H, Y, X, gs0, gs1, gs2, gs3, CHANNELS_LAST)[:, None] + j
        i = tl.load(g_ptr + base, mask=mask).to(tl.float32)
        f = tl.load(g_ptr + base + step, mask=mask).to(tl.float32)
        g = tl.load(g_ptr + base + 2 * step, mask=mask).to(tl.float32)
        o = tl.load(g_ptr + base + 3 * step, mask=mask).to(tl.float32)
        return tl.sigmoid(i), tl.sigmoid(f), _tanh(g), tl.sigmoid(o)

    @triton.jit
    def _forward_kernel(g_ptr, c_ptr, h_out, c_out, R, C, H, Y, X,
                        gs0, gs1, gs2, gs3, cs0, cs1, cs2, cs3, hs0, hs1, hs2, hs3, os0, os1, os2, os3,
                        G_STEP, CHANNELS_LAST: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
        r, j, mask = _tile(R, C, BLOCK_R, BLOCK_C)
        i, f, g, o = _load_tiled_gates(g_ptr, r, j, H, Y, X, gs0, gs1, gs2, gs3, G_STEP, mask, CHANNELS_LAST)
        c = tl.load(c_ptr + _row_base(r, H, Y, X, cs0, cs1, cs2, cs3, CHANNELS_LAST)[:, None] + j, mask=mask)
        c_new = f * c.to(tl.float32) + i * g
        h = o * _tanh(c_new)
        tl.store(h_out + _row_base(r, H, Y, X, hs0, hs1, hs2, hs3, CHANNELS_LAST)[:, None] + j,
                 h.to(h_out.dtype.element_ty), mask=mask)
        tl.store(c_out + _row_base(r, H, Y, X, os0, os1, os2, os3, CHANNELS_LAST)[:, None] + j,
                 c_new.to(c_out.dtype.element_ty), mask=mask)

    @triton.jit
    def _backward_kernel(g_ptr, c_ptr, dh_ptr, dc_ptr, dg_out, dc_out, R, C, H, Y, X,
                         gs0, gs1, gs2, gs3, cs0, cs1, cs2, cs3, hs0, hs1, hs2, hs3, ds0, ds1, ds2, ds3,
                         es0, es1, es2, es3, fs0, fs1, fs2, fs3, G_STEP, E_STEP,
                         CHANNELS_LAST: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
        r, j, mask = _tile(R, C, BLOCK_R, BLOCK_C)
        i, f, g, o = _load_tiled_gates(g_ptr, r, j, H, Y, X, gs0, gs1, gs2, gs3, G_STEP, mask, CHANNELS_LAST)
        c = tl.load(c_ptr + _row_base(r, H, Y, X, cs0, cs1, cs2, cs3, CHANNELS_LAST)[:, None] + j,
                    mask=mask).to(tl.float32)
        dh = tl.load(dh_ptr + _row_base(r, H, Y, X, hs0, hs1, hs2, hs3, CHANNELS_LAST)[:, None] + j,
                     mask=mask).to(tl.float32)
        dc_new = tl.load(dc_ptr + _row_base(r, H, Y, X, ds0, ds1, ds2, ds3, CHANNELS_LAST)[:, None] + j,
                         mask=mask).to(tl.float32)
        tc = _tanh(f * c + i * g)
        dc_sum = dc_new + dh * o * (1.0 - tc * tc)
        base = _row_base(r, H, Y, X, es0, es1, es2, es3, CHANNELS_LAST)[:, None] + j
        ty = dg_out.dtype.element_ty
        tl.store(dg_out + base, (dc_sum * g * i * (1.0 - i)).to(ty), mask=mask)
        tl.store(dg_out + base + E_STEP, (dc_sum * c * f * (1.0 - f)).to(ty), mask=mask)
        tl.store(dg_out + base + 2 * E_STEP, (dc_sum * i * (1.0 - g * g)).to(ty), mask=mask)
        tl.store(dg_out + base + 3 * E_STEP, (dh * tc * o * (1.0 - o)).to(ty), mask=mask)
        tl.store(dc_out + _row_base(r, H, Y, X, fs0, fs1, fs2, fs3, CHANNELS_LAST)[:, None] + j,
                 (dc_sum * f).to(dc_out.dtype.element_ty), mask=mask)

    _strided = {_forward_kernel: _strided_forward, _backward_kernel: _strided_backward}
