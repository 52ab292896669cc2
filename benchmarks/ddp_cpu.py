"""Data-parallel correctness on CPUs: N gloo workers against one process, the same loss curve.

    python -m benchmarks.ddp_cpu --workers 4 [--output benchmarks/results/ddp_cpu_4.json]

Starts a Ray of its own with N logical CPUs (so N workers fit a smaller machine; they share its cores) and trains
the 5-degree demo for 3 epochs twice per sharing mode: in this process, and on N workers through Ray Train. Whole
micro-batches: batch 8 x accumulation N, each worker runs one micro-batch per step; split micro-batches: batch 8 x 1,
each worker takes 8/N windows of it. Prints and writes the largest relative difference of train/val loss and RMSE.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from benchmarks._common import write_json


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ddp_cpu", description=__doc__.split("\n")[0])
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--output", default=None)
    args = p.parse_args(argv)

    import ray

    from data_io import DataConfig, prepare
    from data_io.demo import write_demo
    from model.config import Config, ModelConfig, TrainConfig
    from model.trainer import fit
    from tune.distributed import fit_distributed

    n = args.workers
    ray.init(num_cpus=n, include_dashboard=False, logging_level="WARNING")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = prepare(DataConfig(data=str(write_demo(Path(tmp) / "demo.nc", seed=0, days=61, resolution=5.0))))
        for mode, batch, accumulation in (("whole micro-batches", 8, n), ("split micro-batches", 8, 1)):
            def config(out: str, workers: int) -> Config:
                return Config(data=data.config, model=ModelConfig(hidden_channels=[4]), train=TrainConfig(
                    output_dir=out, num_epochs=3, num_workers=0, learning_rate=3e-3, seed=5, batch_size=batch,
                    gradient_accumulation_steps=accumulation, checkpoint_every=0, early_stopping_patience=5,
                    ddp_cpu_workers=workers))
            one = fit(config(f"{tmp}/{mode}-1", 0), data)
            many = fit_distributed(config(f"{tmp}/{mode}-{n}", n), data)
            a = np.array([[r.train_loss, r.val_loss, r.val_rmse] for r in one])
            b = np.array([[r.train_loss, r.val_loss, r.val_rmse] for r in many])
            diff = float(np.max(np.abs(a - b) / np.abs(a))) if a.shape == b.shape else float("inf")
            rows.append({"mode": mode, "batch": batch, "accumulation": accumulation, "workers": n,
                         "one_process": a.tolist(), "data_parallel": b.tolist(), "max_rel_diff": diff})
            print(f"{mode:22s} batch {batch} x {accumulation}: {n} gloo workers vs 1 process, "
                  f"max relative difference {diff:.2e}")
    ray.shutdown()
    if args.output:
        write_json(args.output, {"command": f"python -m benchmarks.ddp_cpu --workers {n}", "rows": rows})


if __name__ == "__main__":
    main()
