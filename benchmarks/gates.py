"""The fused gate kernels alone (model/_gates.py): microseconds a call and the bandwidth they reach, per tile size
and warp count, at the shapes training gives them.

    python -m benchmarks.gates [--elements 1024 2048 4096 8192] [--warps 4 8] [--output FILE]

Each call's time is GPU time (the calls replayed as one CUDA graph, as training replays them). Shapes: the
reference workload (batch 16, 64 channels per gate, 61x61) and graphcast's settings (batch 4, 64 and 128 channels,
the 61x61 target box and the 101x161 upstream box), NCHW and channels-last. As in training, the gates
are bf16 (a convolution under autocast), the cell state fp32, h bf16, and the gradient of h arrives as a channel
slice of the next step's input gradient (the concatenation of input and state).
"""

from __future__ import annotations

import argparse
import itertools

import torch

from benchmarks._common import command, write_json
from model import _gates

SHAPES = [  # (label, batch, hidden, y, x, input channels beside h in the next step's concatenation)
    ("reference", 16, 64, 61, 61, 56),
    ("graphcast layer 1", 4, 64, 61, 61, 120),
    ("graphcast layer 2", 4, 128, 61, 61, 64),
    ("graphcast upstream layer 2", 4, 128, 101, 161, 64),
]


def _tensors(b: int, hidden: int, y: int, x: int, cin: int, channels_last: bool):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    dev = torch.device("cuda")

    def make(channels: int, dtype: torch.dtype) -> torch.Tensor:
        return torch.randn(b, channels, y, x, device=dev, dtype=dtype).contiguous(memory_format=fmt)

    gates, c = make(4 * hidden, torch.bfloat16), make(hidden, torch.float32)
    bias = torch.randn(4 * hidden, device=dev)
    dh = make(cin + hidden, torch.bfloat16)[:, cin:]  # a slice of the next step's input gradient
    dc = make(hidden, torch.float32)
    return gates, c, bias, dh, dc


def _time(fn, reps: int) -> float:
    """GPU microseconds a call: `reps` calls captured in one CUDA graph, replayed between CUDA events, after warm-up
    calls (Triton compiles). Launched one by one from Python the calls would time the host's launch cost instead
    (20-60 us each, 2-3x the kernels; BENCHMARKS §8, session 11), which training's CUDA graphs do not pay."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(reps):
            fn()
    graph.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1e3 / reps


def measure(shape: tuple, channels_last: bool, reps: int) -> dict[str, float]:
    _, b, hidden, y, x, cin = shape
    gates, c, bias, dh, dc = _tensors(b, hidden, y, x, cin, channels_last)
    h_new = torch.empty_like(c, dtype=torch.bfloat16)
    c_new = torch.empty_like(c)
    d_gates, d_c = torch.empty_like(gates), torch.empty_like(c)
    d_bias = torch.zeros(bias.shape, device=bias.device)

    def forward():
        _gates._launch(_gates._forward_kernel, gates, c, bias, (h_new, c_new))

    def backward():
        d_bias.zero_()
        _gates._launch(_gates._backward_kernel, gates, c, bias, (dh, dc, d_gates, d_c), d_bias)

    fwd_us, bwd_us = _time(forward, reps), _time(backward, reps)
    n = c.numel()
    fwd_bytes = n * (4 * 2 + 4 + 2 + 4)  # gates in, c in, h out, c' out
    bwd_bytes = n * (4 * 2 + 4 + 2 + 4 + 4 * 2 + 4)  # gates, c, dh, dc' in; d_gates, d_c out
    return {"forward_us": fwd_us, "backward_us": bwd_us,
            "forward_gb_s": fwd_bytes / fwd_us / 1e3, "backward_gb_s": bwd_bytes / bwd_us / 1e3}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--elements", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    p.add_argument("--warps", type=int, nargs="+", default=[4, 8])
    p.add_argument("--reps", type=int, default=200)
    p.add_argument("--output", default="benchmarks/results/gates.json")
    args = p.parse_args(argv)
    shipped = dict(_gates._TILES)
    rows = []
    for shape, channels_last in itertools.product(SHAPES, (False, True)):
        for elements, warps in itertools.product(args.elements, args.warps):
            _gates._TILES.update(forward=(elements, warps), backward=(elements, warps))
            row = {"shape": shape[0], "batch": shape[1], "hidden": shape[2], "grid": f"{shape[3]}x{shape[4]}",
                   "channels_last": channels_last, "elements": elements, "warps": warps,
                   **measure(shape, channels_last, args.reps)}
            rows.append(row)
            print(f"{shape[0]:28s} {'CL  ' if channels_last else 'NCHW'} {elements:5d} el {warps} warps  "
                  f"fwd {row['forward_us']:7.1f} us {row['forward_gb_s']:6.0f} GB/s  "
                  f"bwd {row['backward_us']:7.1f} us {row['backward_gb_s']:6.0f} GB/s", flush=True)
    _gates._TILES.update(shipped)
    write_json(args.output, {"command": command("gates", argv), "shipped": shipped, "rows": rows})


if __name__ == "__main__":
    main()
