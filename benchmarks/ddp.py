"""Data-parallel speed-up: time per epoch on 1 GPU (one process) and on N GPUs (Ray Train, DDP) at the reference grid.

    python -m benchmarks.ddp --gpus 1 2 [--epochs 4] [--compile] [--accumulation 2]
                             [--output benchmarks/results/ddp.json]
    python -m benchmarks.ddp --gpus 1 2 --cpu --days 20 --hidden-channels 4   # the same logic on CPU workers (gloo)

Reference: 0.25 deg, 56 input channels, downstream 61x61, window 6, precipitation target, hidden [64, 64],
batch 16. The effective batch (batch x accumulation) is the same for every worker count: with --accumulation a
multiple of N each GPU runs whole batches of 16 and N GPUs run N times fewer of them; otherwise each GPU takes
16 / N windows of every batch. The trainer's speed defaults (bf16, data on
the GPU), plus torch.compile with CUDA graphs under --compile (its first epoch compiles). The first epoch is warm-up
and not counted; the table gives the median of the others, the speed-up over the first row and the scaling
efficiency (speed-up / N), and the JSON keeps every epoch's record.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks._common import command, reference_file, write_json
from data_io import ConfigError, DataConfig, prepare
from model.config import Config, ModelConfig, TrainConfig, per_worker_batch
from model.errors import release_memory
from model.trainer import fit

# NVLink multicast stays off on the shared GPU hosts (the device notes); Ray's workers get these from the driver.
SAFE_NCCL_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


def run_config(data, workers: int, cpu: bool, args, out: str) -> Config:
    train = TrainConfig(output_dir=out, batch_size=args.batch_size, gradient_accumulation_steps=args.accumulation,
                        num_epochs=args.epochs, checkpoint_every=0, early_stopping_patience=args.epochs + 1,
                        device="cpu" if cpu else "cuda", num_workers=0 if cpu else 2, compile=args.compile)
    if workers > 1:
        if cpu:
            train.ddp_cpu_workers = workers
        else:
            train.num_gpus = workers
    return Config(data=data.config, model=ModelConfig(hidden_channels=args.hidden_channels), train=train)


def measure(data, workers: int, cpu: bool, args) -> dict:
    with tempfile.TemporaryDirectory() as out:
        config = run_config(data, workers, cpu, args, out)
        started = time.perf_counter()
        if workers > 1:
            from tune.distributed import fit_distributed  # Ray Train

            history = fit_distributed(config, data)
        else:
            history = fit(config, data)
        wall = time.perf_counter() - started
    release_memory()  # the one-process run's cached GPU memory would otherwise stay with this driver
    micro, accumulation = per_worker_batch(config.train, workers)
    timed = history[1:] or history
    return {
        "workers": workers, "device": "cpu" if cpu else "cuda", "wall_s": wall,
        "time_per_epoch_s": statistics.median(r.time_per_epoch_s for r in timed),
        "samples_per_s": statistics.median(r.samples_per_s for r in timed),
        "per_worker_batch": micro, "per_worker_accumulation": accumulation,
        "effective_batch_size": history[-1].effective_batch_size,
        "peak_memory_mb": max(r.peak_memory_mb for r in timed), "val_loss": history[-1].val_loss,
        "epochs": [r.to_dict() for r in history],
    }


def table(rows: list[dict]) -> str:
    base = rows[0]["time_per_epoch_s"] * rows[0]["workers"]
    lines = ["| workers | device | batch x accumulation per worker | time per epoch (s) | samples/s | speed-up | "
             "efficiency |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        speedup = base / r["time_per_epoch_s"]
        share = f"{r['per_worker_batch']} x {r['per_worker_accumulation']}"
        lines.append(f"| {r['workers']} | {r['device']} | {share} | {r['time_per_epoch_s']:.2f} | "
                     f"{r['samples_per_s']:.1f} | {speedup:.2f}x | {100 * speedup / r['workers']:.0f}% |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ddp", description=__doc__.split("\n")[0])
    p.add_argument("--gpus", type=int, nargs="+", default=[1, 2], help="worker counts to time, in order")
    p.add_argument("--cpu", action="store_true", help="CPU workers (gloo) instead of GPUs: checks the logic")
    p.add_argument("--epochs", type=int, default=4, help="the first is warm-up and not counted")
    p.add_argument("--days", type=int, default=400)
    p.add_argument("--data", default="/tmp/convlstm_reference.nc")
    p.add_argument("--hidden-channels", type=int, nargs="+", default=[64, 64])
    p.add_argument("--batch-size", type=int, default=16, help="the micro-batch of the one-GPU run")
    p.add_argument("--accumulation", type=int, default=1,
                   help="gradient accumulation steps of the one-GPU run; a multiple of N keeps whole batches per GPU")
    p.add_argument("--compile", action="store_true", help="torch.compile (mode reduce-overhead: CUDA graphs)")
    p.add_argument("--output", default="benchmarks/results/ddp.json")
    args = p.parse_args(argv)
    for key, value in SAFE_NCCL_ENV.items():
        os.environ.setdefault(key, value)
    for n in args.gpus:
        try:
            if n < 1:
                raise ConfigError("worker counts must be positive")
            per_worker_batch(TrainConfig(batch_size=args.batch_size, gradient_accumulation_steps=args.accumulation), n)
        except ConfigError as exc:
            p.error(f"--gpus {n}: {exc}")

    data = prepare(DataConfig(data=str(reference_file(Path(args.data), args.days))))
    _, c, h, w = data.inputs.shape
    print(f"grid {h}x{w}, {c} channels, {len(data.starts('train'))} training windows, hidden {args.hidden_channels}, "
          f"batch {args.batch_size} x {args.accumulation} accumulation steps")
    rows = []
    for n in args.gpus:
        rows.append(measure(data, n, args.cpu, args))
        r = rows[-1]
        print(f"{n} worker(s): {r['time_per_epoch_s']:.2f} s/epoch, {r['samples_per_s']:.1f} samples/s "
              f"(wall {r['wall_s']:.0f} s with start-up)", flush=True)
    print(table(rows))
    write_json(args.output, {"command": command("ddp", argv),
                             "hidden_channels": args.hidden_channels, "batch_size": args.batch_size,
                             "accumulation": args.accumulation,
                             "compile": args.compile,
                             "grid": [h, w], "channels": c, "rows": rows})
    return rows


if __name__ == "__main__":
    main()
