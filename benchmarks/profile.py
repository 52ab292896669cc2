"""Where a training step's GPU time goes: the kernel table of one epoch at the reference workload.

    python -m benchmarks.profile [--batch-size 16] [--hidden-channels 64 64] [--model-type dual_stream --upstream]

Reference workload as benchmarks/trainer.py (0.25 deg, 56 channels, 61x61, [64, 64], batch 16), bf16 autocast, data
on the GPU, eager steps (CUDA graphs off, so each kernel is its own event; the graphed default runs the same
kernels). One warm-up epoch, then one profiled epoch (torch.profiler, CUDA activity). Prints the kernels by GPU
time and a summary by kind (convolutions, GEMMs, element-wise, reductions and norms, copies and casts, optimizer),
the share of the epoch's wall time the GPU was busy, and writes benchmarks/results/profile_<name>.json.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks._common import command, reference_file, write_json
from benchmarks.trainer import model_config
from data_io import DataConfig, prepare
from model.config import Config, TrainConfig
from model.trainer import Trainer

KINDS = [  # first match wins
    ("optimizer", r"adam|multi_tensor|foreach"),
    ("convolution", r"conv|cudnn|implicit|xmma|wgrad|dgrad|fprop|winograd|nhwc|nchw"),
    ("GEMM", r"gemm|cutlass|matmul|sm90|ampere_bf16|cublas"),
    ("norm / reduction", r"norm|reduce|welford|softmax|sum"),
    ("copy / cast", r"copy|cast|memcpy|memset|fill|cat|index|gather|scatter"),
    ("element-wise", r"elementwise|vectorized|unrolled|sigmoid|tanh|mul|add|pointwise"),
]


def kind(name: str) -> str:
    low = name.lower()
    return next((k for k, pattern in KINDS if re.search(pattern, low)), "other")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__.split("\n")[0])
    p.add_argument("--days", type=int, default=400)
    p.add_argument("--data", default="/tmp/convlstm_reference.nc")
    p.add_argument("--hidden-channels", type=int, nargs="+", default=[64, 64])
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--model-type", default=None)
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE")
    p.add_argument("--upstream", action="store_true")
    p.add_argument("--channels-last", action="store_true", help="the trainer's --channels-last")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--output", default=None)
    args = p.parse_args(argv)

    path = args.data.replace(".nc", "_upstream.nc") if args.upstream else args.data
    data = prepare(DataConfig(data=str(reference_file(path, args.days, upstream=args.upstream)),
                              include_upstream=args.upstream))
    device = torch.device("cuda", torch.cuda.current_device())
    with tempfile.TemporaryDirectory() as out:
        config = Config(data=data.config, model=model_config(args),
                        train=TrainConfig(output_dir=out, batch_size=args.batch_size, num_epochs=2, checkpoint_every=0,
                                          cuda_graphs=False, data_on_device="on", use_amp=True,
                                          channels_last=args.channels_last))
        trainer = Trainer(config, data, device)
        trainer.train_epoch(1)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            t0 = time.perf_counter()
            _, samples = trainer.train_epoch(2)
            torch.cuda.synchronize()
            wall = time.perf_counter() - t0
    per_name: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    events = prof.events()
    for evt in events:
        if evt.device_type == torch.autograd.DeviceType.CUDA:
            entry = per_name[evt.name]
            entry[0] += evt.device_time / 1e3  # microseconds -> ms
            entry[1] += 1
    if not per_name:  # older profilers hang the kernels under their CPU op instead
        for evt in events:
            for k in getattr(evt, "kernels", []):
                entry = per_name[k.name]
                entry[0] += k.duration / 1e3
                entry[1] += 1
    total = sum(v[0] for v in per_name.values())
    by_kind: dict[str, float] = defaultdict(float)
    for name, (ms, _) in per_name.items():
        by_kind[kind(name)] += ms
    kernels = sorted(per_name.items(), key=lambda kv: -kv[1][0])
    print(f"epoch: {samples} samples in {wall:.2f} s ({samples / wall:.0f} samples/s); GPU busy {total / 1e3:.2f} s "
          f"({100 * total / 1e3 / wall:.0f}% of the wall time); {sum(v[1] for v in per_name.values())} kernels")
    print("\n| kind | GPU ms | share |\n|---|---:|---:|")
    for k, ms in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        print(f"| {k} | {ms:.0f} | {100 * ms / total:.1f}% |")
    print("\n| kernel | kind | calls | GPU ms | share |\n|---|---|---:|---:|---:|")
    for name, (ms, n) in kernels[: args.top]:
        print(f"| `{name[:90]}` | {kind(name)} | {n} | {ms:.1f} | {100 * ms / total:.1f}% |")
    label = args.model_type or "stacked"
    write_json(args.output or f"benchmarks/results/profile_{label}_b{args.batch_size}.json", {
        "command": command("profile", argv),
        "samples": samples, "wall_s": wall, "gpu_busy_ms": total, "by_kind_ms": dict(by_kind),
        "kernels": [{"name": n, "calls": c, "ms": ms, "kind": kind(n)} for n, (ms, c) in kernels[:200]]})


if __name__ == "__main__":
    main()
