"""Where a data-parallel training step's time goes: torch.profiler over one epoch of the product's Trainer.

    python -m benchmarks.ddp_profile --gpus 1 2 [--batch-size 16] [--accumulation 1] [--compile] [--days 1600]

For each worker count it starts that many processes (one per GPU, NCCL, as Ray Train would), trains one warm-up
epoch, then profiles the next one on rank 0 and prints: wall time per optimizer step, the GPU's busy time per step
(the sum of its kernels), and the operators with the most host time. A step whose wall time is well above its GPU
time is bound by the host (launches, Python, synchronisation), not by the convolutions.
"""

from __future__ import annotations

import argparse
import os
import socket
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from benchmarks._common import reference_file
from benchmarks.ddp import SAFE_NCCL_ENV
from data_io import DataConfig, prepare
from model.config import Config, ModelConfig, TrainConfig


def _worker(rank: int, world: int, args, data, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), **SAFE_NCCL_ENV)
    device = torch.device("cpu") if args.cpu else torch.device("cuda", rank)
    if not args.cpu:
        torch.cuda.set_device(rank)
    if world > 1:
        dist.init_process_group("gloo" if args.cpu else "nccl", rank=rank, world_size=world)
    from model.trainer import Trainer

    train = TrainConfig(output_dir=out, batch_size=args.batch_size, gradient_accumulation_steps=args.accumulation,
                        num_epochs=2, checkpoint_every=0, device=device.type, compile=args.compile,
                        num_workers=0)
    trainer = Trainer(Config(data=data.config, model=ModelConfig(hidden_channels=args.hidden_channels), train=train),
                      data, device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    trainer.train_epoch(1)  # compiles and warms up
    sync()
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        started = time.perf_counter()
        trainer.train_epoch(2)
        sync()
        wall = time.perf_counter() - started
    if rank == 0:
        steps = -(-len(data.starts("train")) // (args.batch_size * args.accumulation))
        events = prof.key_averages()
        gpu_us = sum(e.self_device_time_total for e in events if e.device_type == torch.autograd.DeviceType.CUDA)
        print(f"\n== {world} GPU(s), batch {args.batch_size} x {args.accumulation} (effective batch "
              f"{args.batch_size * args.accumulation}), compile {args.compile}: {steps} steps, "
              f"{1e3 * wall / steps:.2f} ms wall per step (profiled), GPU kernels {gpu_us / 1e3 / steps:.2f} ms "
              f"per step", flush=True)
        print(events.table(sort_by="self_cpu_time_total", row_limit=18, max_name_column_width=60), flush=True)
        print(events.table(sort_by="self_device_time_total", row_limit=12, max_name_column_width=60), flush=True)
    if world > 1:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ddp_profile", description=__doc__.split("\n")[0])
    p.add_argument("--gpus", type=int, nargs="+", default=[1, 2])
    p.add_argument("--days", type=int, default=1600)
    p.add_argument("--data", default="/tmp/convlstm_reference_long.nc")
    p.add_argument("--hidden-channels", type=int, nargs="+", default=[64, 64])
    p.add_argument("--batch-size", type=int, default=16, help="the micro-batch of the one-GPU run")
    p.add_argument("--accumulation", type=int, default=1)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--cpu", action="store_true", help="CPU processes (gloo): checks the script without GPUs")
    p.add_argument("--output-dir", default="/tmp/ddp_profile")
    args = p.parse_args(argv)
    data = prepare(DataConfig(data=str(reference_file(Path(args.data), args.days))))
    for world in args.gpus:
        # fork: the parent has not touched CUDA, and the dataset is shared instead of pickled to each process
        mp.start_processes(_worker, args=(world, args, data, _free_port(), args.output_dir), nprocs=world,
                           start_method="fork")


if __name__ == "__main__":
    main()
