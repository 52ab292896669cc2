"""The LSTM cell's gate arithmetic, `c' = sigmoid(f) c + sigmoid(i) tanh(g)` and `h = sigmoid(o) tanh(c')`.

Why a kernel of its own: in PyTorch's element-wise ops this is about ten kernels forward and fifteen backward, each
a full pass over the (B, 4H, Y, X) gates in memory, plus the casts autocast adds around them; at the reference
workload they took more GPU time than the convolutions (BENCHMARKS §8). On CUDA, with Triton (which ships with
PyTorch's CUDA wheels), one kernel reads the gates and the old cell state and writes h and c'; the backward kernel
recomputes the activations from the same two inputs and writes the gates' and the old state's gradients. Autograd
saves those two tensors only, fewer than the element-wise ops save. Given the convolution's bias, the forward adds it
and the backward sums its gradient as it writes the gates' (partial sums per tile, added atomically): the
convolution's own bias gradient is one more pass over the gates' gradient (16% of the channels-last GPU time).

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


def lstm_gates(gates: torch.Tensor, c: torch.Tensor, fused: bool = True,
               bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(h, c') from the pre-activation gates (B, 4H, Y, X), chunked as i, f, g, o, plus `bias` (4H) when given, and
    the cell state (B, H, Y, X)."""
    if uses_kernels(gates, fused):
        # Under autocast h is stored in its dtype (bf16), which the next convolution reads without a cast.
        h_dtype = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else gates.dtype
        return _FusedGates.apply(gates, c, bias, h_dtype)
    if bias is not None:
        gates = gates + bias.to(gates.dtype)[:, None, None]
    i, f, g, o = gates.chunk(4, dim=1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def uses_kernels(t: torch.Tensor, fused: bool = True) -> bool:
    """Whether lstm_gates runs the kernels for gates on t's device. On the meta device (model/memory.footprint counts
    what autograd saves) the fused path runs without them; under torch.compile inductor fuses the ops itself."""
    return fused and (t.is_meta or t.is_cuda and triton is not None) and not torch.compiler.is_compiling()


def fused_available() -> bool:
    return triton is not None and torch.cuda.is_available()


_BLOCK = 1024  # elements per program of the strided kernels
# Per tiled kernel: elements per program and warps (benchmarks/gates.py measures the choices).
_TILES = {"forward": (1024, 4), "backward": (1024, 4)}


class _FusedGates(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gates: torch.Tensor, c: torch.Tensor, bias: torch.Tensor | None,
                h_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        # The outputs take the cell state's layout; the kernel walks them in memory order.
        h_new = torch.empty_like(c, dtype=h_dtype)
        c_new = torch.empty_like(c)
        bias = None if bias is None else bias.contiguous()
        if not gates.is_meta:
            _launch(_forward_kernel, gates, c, bias, (h_new, c_new))
        ctx.save_for_backward(gates, c, bias)
        return h_new, c_new

    @staticmethod
    def backward(ctx, dh: torch.Tensor | None, dc: torch.Tensor | None):
        gates, c, bias = ctx.saved_tensors
        dh = torch.zeros_like(c) if dh is None else dh
        dc = torch.zeros_like(c) if dc is None else dc
        d_gates = torch.empty_like(gates)
        d_c = torch.empty_like(c)
        d_bias = None if bias is None else torch.zeros(bias.shape, dtype=torch.float32, device=bias.device)
        tiled = _launch(_backward_kernel, gates, c, bias, (dh, dc, d_gates, d_c), d_bias)
        if d_bias is not None and not tiled:  # the strided kernel leaves the bias' gradient to PyTorch
            d_bias = d_gates.sum((0, 2, 3), dtype=torch.float32)
        return d_gates, d_c, None if bias is None else d_bias.to(bias.dtype), None


def _launch(kernel, gates: torch.Tensor, c: torch.Tensor, bias: torch.Tensor | None,
            others: tuple[torch.Tensor, ...], d_bias: torch.Tensor | None = None) -> bool:
    """Run `kernel` (or its strided form); True when the tiled kernel ran, which sums into d_bias."""
    b, hidden, y, x = c.shape
    if gates.numel() >= 2**31:
        raise ValueError(f"fused gates: {tuple(gates.shape)} has 2**31 elements or more; use --no-fused-gates")
    tensors = (gates, c, *others)
    strides = [s for t in tensors for s in t.stride()]
    has_bias = bias is not None
    pointers = [bias if has_bias else gates]  # a tensor for an unused pointer argument
    if kernel is _backward_kernel:
        pointers.append(d_bias if d_bias is not None else gates)
    channels_last = c.stride(1) == 1 and hidden > 1
    rows = _rows_layout(tensors, prefer_channels_last=channels_last)
    if rows is None:  # no dimension of unit stride in common: address every element by its four indices
        _strided[kernel][(triton.cdiv(c.numel(), _BLOCK),)](
            *tensors, *pointers[:1], c.numel(), hidden, y, x, *strides, HAS_BIAS=has_bias,
            CHANNELS_LAST=channels_last, BLOCK=_BLOCK)
        return False
    # A 2-D tile: rows are (b, channel) with the pixels along a row (NCHW), or pixels with the channels along a row
    # (channels-last); each row's indices are divided out once, not once per element, and a row is read contiguously.
    n_rows, n_cols = (b * y * x, hidden) if rows == "pixels" else (b * hidden, y * x)
    elements, warps = _TILES["backward" if kernel is _backward_kernel else "forward"]
    block_cols = min(1024, triton.next_power_of_2(n_cols))
    block_rows = max(1, elements // block_cols)
    gate_steps = [hidden * t.stride(1) for t in tensors if t.shape[1] == 4 * hidden]  # gate k at k * step
    kernel[(triton.cdiv(n_rows, block_rows), triton.cdiv(n_cols, block_cols))](
        *tensors, *pointers, n_rows, n_cols, hidden, y, x, *strides, *gate_steps, HAS_BIAS=has_bias,
        CHANNELS_LAST=rows == "pixels", BLOCK_R=block_rows, BLOCK_C=block_cols, num_warps=warps)
    return True


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
    def _tanh(v):
        return libdevice.tanh(v)

    # The cell's maths, once for the strided and the tiled kernels: pre-activations (plus the bias) in, fp32 out.
    @triton.jit
    def _activate(i, f, g, o, b_ptr, k, k_mask, H, HAS_BIAS: tl.constexpr):
        if HAS_BIAS:  # k: each element's channel within a gate (broadcast along a tile's rows or columns)
            i = i + tl.load(b_ptr + k, mask=k_mask).to(tl.float32)
            f = f + tl.load(b_ptr + H + k, mask=k_mask).to(tl.float32)
            g = g + tl.load(b_ptr + 2 * H + k, mask=k_mask).to(tl.float32)
            o = o + tl.load(b_ptr + 3 * H + k, mask=k_mask).to(tl.float32)
        return tl.sigmoid(i), tl.sigmoid(f), _tanh(g), tl.sigmoid(o)

    @triton.jit
    def _cell(i, f, g, o, c):
        """(h, c') of the activated gates and the old state."""
        c_new = f * c + i * g
        return o * _tanh(c_new), c_new

    @triton.jit
    def _cell_backward(i, f, g, o, c, dh, dc_new):
        """The gradients of the four pre-activations and of the old state, from those of h and c'."""
        tc = _tanh(f * c + i * g)
        dc_sum = dc_new + dh * o * (1.0 - tc * tc)
        return (dc_sum * g * i * (1.0 - i), dc_sum * c * f * (1.0 - f), dc_sum * i * (1.0 - g * g),
                dh * tc * o * (1.0 - o), dc_sum * f)

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
    def _load_gates(g_ptr, b_ptr, bb, k, yy, xx, H, gs0, gs1, gs2, gs3, mask, HAS_BIAS: tl.constexpr):
        base = _at(bb, k, yy, xx, gs0, gs1, gs2, gs3)
        step = _at(bb * 0, k * 0 + H, yy * 0, xx * 0, gs0, gs1, gs2, gs3)  # H channels on, in int64
        i = tl.load(g_ptr + base, mask=mask).to(tl.float32)
        f = tl.load(g_ptr + base + step, mask=mask).to(tl.float32)
        g = tl.load(g_ptr + base + 2 * step, mask=mask).to(tl.float32)
        o = tl.load(g_ptr + base + 3 * step, mask=mask).to(tl.float32)
        return _activate(i, f, g, o, b_ptr, k, mask, H, HAS_BIAS)

    @triton.jit
    def _strided_forward(g_ptr, c_ptr, h_out, c_out, b_ptr, n, H, Y, X,
                         gs0, gs1, gs2, gs3, cs0, cs1, cs2, cs3, hs0, hs1, hs2, hs3, os0, os1, os2, os3,
                         HAS_BIAS: tl.constexpr, CHANNELS_LAST: tl.constexpr, BLOCK: tl.constexpr):
        # Positions in int32 (n < 2**31, checked in _launch): int64 division is many times slower on a GPU.
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        bb, k, yy, xx = _index(offs, H, Y, X, CHANNELS_LAST)
        i, f, g, o = _load_gates(g_ptr, b_ptr, bb, k, yy, xx, H, gs0, gs1, gs2, gs3, mask, HAS_BIAS)
        c = tl.load(c_ptr + _at(bb, k, yy, xx, cs0, cs1, cs2, cs3), mask=mask).to(tl.float32)
        h, c_new = _cell(i, f, g, o, c)
        tl.store(h_out + _at(bb, k, yy, xx, hs0, hs1, hs2, hs3), h.to(h_out.dtype.element_ty), mask=mask)
        tl.store(c_out + _at(bb, k, yy, xx, os0, os1, os2, os3), c_new.to(c_out.dtype.element_ty), mask=mask)

    @triton.jit
    def _strided_backward(g_ptr, c_ptr, dh_ptr, dc_ptr, dg_out, dc_out, b_ptr, n, H, Y, X,
                          gs0, gs1, gs2, gs3, cs0, cs1, cs2, cs3, hs0, hs1, hs2, hs3, ds0, ds1, ds2, ds3,
                          es0, es1, es2, es3, fs0, fs1, fs2, fs3,
                          HAS_BIAS: tl.constexpr, CHANNELS_LAST: tl.constexpr, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        bb, k, yy, xx = _index(offs, H, Y, X, CHANNELS_LAST)
        i, f, g, o = _load_gates(g_ptr, b_ptr, bb, k, yy, xx, H, gs0, gs1, gs2, gs3, mask, HAS_BIAS)
        c = tl.load(c_ptr + _at(bb, k, yy, xx, cs0, cs1, cs2, cs3), mask=mask).to(tl.float32)
        dh = tl.load(dh_ptr + _at(bb, k, yy, xx, hs0, hs1, hs2, hs3), mask=mask).to(tl.float32)
        dc_new = tl.load(dc_ptr + _at(bb, k, yy, xx, ds0, ds1, ds2, ds3), mask=mask).to(tl.float32)
        d_i, d_f, d_g, d_o, d_c = _cell_backward(i, f, g, o, c, dh, dc_new)
        base = _at(bb, k, yy, xx, es0, es1, es2, es3)
        step = _at(bb * 0, k * 0 + H, yy * 0, xx * 0, es0, es1, es2, es3)
        ty = dg_out.dtype.element_ty
        tl.store(dg_out + base, d_i.to(ty), mask=mask)
        tl.store(dg_out + base + step, d_f.to(ty), mask=mask)
        tl.store(dg_out + base + 2 * step, d_g.to(ty), mask=mask)
        tl.store(dg_out + base + 3 * step, d_o.to(ty), mask=mask)
        tl.store(dc_out + _at(bb, k, yy, xx, fs0, fs1, fs2, fs3), d_c.to(dc_out.dtype.element_ty), mask=mask)

    @triton.jit
    def _row_base(r, H, Y, X, s0, s1, s2, s3, CHANNELS_LAST: tl.constexpr):
        """Offset of each row's first element, in int64: a tensor may be a slice of a larger buffer."""
        if CHANNELS_LAST:  # rows are pixels (b, y, x)
            xx = r % X
            rest = r // X
            return (rest // Y).to(tl.int64) * s0 + (rest % Y).to(tl.int64) * s2 + xx.to(tl.int64) * s3
        return (r // H).to(tl.int64) * s0 + (r % H).to(tl.int64) * s1  # rows are (b, channel)

    @triton.jit
    def _tile(R, C, H, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, CHANNELS_LAST: tl.constexpr):
        """A tile's rows r and columns j (1-D), its mask, and each element's channel k with k's mask (broadcast
        along the columns, channels-last, or along the rows)."""
        r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
        j = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        if CHANNELS_LAST:
            k, k_mask = j[None, :], (j < C)[None, :]
        else:
            k, k_mask = (r % H)[:, None], (r < R)[:, None]
        return r, j, (r < R)[:, None] & (j < C)[None, :], k, k_mask

    @triton.jit
    def _load_tiled_gates(g_ptr, b_ptr, r, j, k, k_mask, H, Y, X, gs0, gs1, gs2, gs3, step, mask,
                          HAS_BIAS: tl.constexpr, CHANNELS_LAST: tl.constexpr):
        base = _row_base(r, H, Y, X, gs0, gs1, gs2, gs3, CHANNELS_LAST)[:, None] + j[None, :]
        i = tl.load(g_ptr + base, mask=mask).to(tl.float32)
        f = tl.load(g_ptr + base + step, mask=mask).to(tl.float32)
        g = tl.load(g_ptr + base + 2 * step, mask=mask).to(tl.float32)
        o = tl.load(g_ptr + base + 3 * step, mask=mask).to(tl.float32)
        return _activate(i, f, g, o, b_ptr, k, k_mask, H, HAS_BIAS)

    @triton.jit
    def _sum_bias_grad(db_ptr, d, r, j, mask, R, C, H, CHANNELS_LAST: tl.constexpr):
        """Add the tile's sum of one gate's gradient, per channel, to db_ptr (one gate's H channels)."""
        d = tl.where(mask, d, 0.0)
        if CHANNELS_LAST:
            tl.atomic_add(db_ptr + j, tl.sum(d, axis=0), mask=j < C, sem="relaxed")
        else:
            tl.atomic_add(db_ptr + r % H, tl.sum(d, axis=1), mask=r < R, sem="relaxed")

    @triton.jit
    def _forward_kernel(g_ptr, c_ptr, h_out, c_out, b_ptr, R, C, H, Y, X,
                        gs0, gs1, gs2, gs3, cs0, cs1, cs2, cs3, hs0, hs1, hs2, hs3, os0, os1, os2, os3,
                        G_STEP, HAS_BIAS: tl.constexpr, CHANNELS_LAST: tl.constexpr, BLOCK_R: tl.constexpr,
                        BLOCK_C: tl.constexpr):
        r, j, mask, k, k_mask = _tile(R, C, H, BLOCK_R, BLOCK_C, CHANNELS_LAST)
        i, f, g, o = _load_tiled_gates(g_ptr, b_ptr, r, j, k, k_mask, H, Y, X, gs0, gs1, gs2, gs3, G_STEP, mask,
                                       HAS_BIAS, CHANNELS_LAST)
        c = tl.load(c_ptr + _row_base(r, H, Y, X, cs0, cs1, cs2, cs3, CHANNELS_LAST)[:, None] + j[None, :], mask=mask)
        h, c_new = _cell(i, f, g, o, c.to(tl.float32))
        tl.store(h_out + _row_base(r, H, Y, X, hs0, hs1, hs2, hs3, CHANNELS_LAST)[:, None] + j[None, :],
                 h.to(h_out.dtype.element_ty), mask=mask)
        tl.store(c_out + _row_base(r, H, Y, X, os0, os1, os2, os3, CHANNELS_LAST)[:, None] + j[None, :],
                 c_new.to(c_out.dtype.element_ty), mask=mask)

    @triton.jit
    def _backward_kernel(g_ptr, c_ptr, dh_ptr, dc_ptr, dg_out, dc_out, b_ptr, db_ptr, R, C, H, Y, X,
                         gs0, gs1, gs2, gs3, cs0, cs1, cs2, cs3, hs0, hs1, hs2, hs3, ds0, ds1, ds2, ds3,
                         es0, es1, es2, es3, fs0, fs1, fs2, fs3, G_STEP, E_STEP,
                         HAS_BIAS: tl.constexpr, CHANNELS_LAST: tl.constexpr, BLOCK_R: tl.constexpr,
                         BLOCK_C: tl.constexpr):
        r, j, mask, k, k_mask = _tile(R, C, H, BLOCK_R, BLOCK_C, CHANNELS_LAST)
        i, f, g, o = _load_tiled_gates(g_ptr, b_ptr, r, j, k, k_mask, H, Y, X, gs0, gs1, gs2, gs3, G_STEP, mask,
                                       HAS_BIAS, CHANNELS_LAST)
        c = tl.load(c_ptr + _row_base(r, H, Y, X, cs0, cs1, cs2, cs3, CHANNELS_LAST)[:, None] + j[None, :],
                    mask=mask).to(tl.float32)
        dh = tl.load(dh_ptr + _row_base(r, H, Y, X, hs0, hs1, hs2, hs3, CHANNELS_LAST)[:, None] + j[None, :],
                     mask=mask).to(tl.float32)
        dc_new = tl.load(dc_ptr + _row_base(r, H, Y, X, ds0, ds1, ds2, ds3, CHANNELS_LAST)[:, None] + j[None, :],
                         mask=mask).to(tl.float32)
        d_i, d_f, d_g, d_o, d_c = _cell_backward(i, f, g, o, c, dh, dc_new)
        base = _row_base(r, H, Y, X, es0, es1, es2, es3, CHANNELS_LAST)[:, None] + j[None, :]
        ty = dg_out.dtype.element_ty
        tl.store(dg_out + base, d_i.to(ty), mask=mask)
        tl.store(dg_out + base + E_STEP, d_f.to(ty), mask=mask)
        tl.store(dg_out + base + 2 * E_STEP, d_g.to(ty), mask=mask)
        tl.store(dg_out + base + 3 * E_STEP, d_o.to(ty), mask=mask)
        tl.store(dc_out + _row_base(r, H, Y, X, fs0, fs1, fs2, fs3, CHANNELS_LAST)[:, None] + j[None, :],
                 d_c.to(dc_out.dtype.element_ty), mask=mask)
        if HAS_BIAS:  # the bias' gradient is the gates' summed over batch and pixels: from the fp32 values
            _sum_bias_grad(db_ptr, d_i, r, j, mask, R, C, H, CHANNELS_LAST)
            _sum_bias_grad(db_ptr + H, d_f, r, j, mask, R, C, H, CHANNELS_LAST)
            _sum_bias_grad(db_ptr + 2 * H, d_g, r, j, mask, R, C, H, CHANNELS_LAST)
            _sum_bias_grad(db_ptr + 3 * H, d_o, r, j, mask, R, C, H, CHANNELS_LAST)

    _strided = {_forward_kernel: _strided_forward, _backward_kernel: _strided_backward}
