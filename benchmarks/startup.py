"""What a cold trial process spends before its first optimizer step, phase by phase (issue "Speed, round two", 5).

    python -m benchmarks.startup [--device cuda] [--runs 3] [--output F]

Each run is a new Python process, as a cold Ray trial actor is, training the README search's demo config for
one epoch. Its phases, in seconds from the process's creation (psutil): imports (torch; the trial's own modules,
ray.tune among them), the CUDA context, the data (read here from the demo file; a trial maps it from Ray's object
store), the Trainer (torch._dynamo's import, which torch.optim forces, the model and data on the device), and the
first optimizer step (Trainer.first_step_at: cuDNN's and cuBLAS's handles, Triton's kernels, the CUDA graph's
capture). Run 1 starts with an empty Triton cache (a fresh machine); the later runs find it filled (any later trial
of the same machine).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def child(device: str) -> dict:
    import psutil

    t: dict[str, float] = {"process": psutil.Process().create_time(), "main": time.time()}
    import torch

    t["import torch"] = time.time()
    import tune.trainable  # noqa: F401  (what a trial actor imports: ray.tune, data_io, model)
    from data_io import prepare
    from model.config import config_from_args
    from model.trainer import Trainer
    from tune import search
    from tune.experiment import trial_config

    t["import trial modules"] = time.time()
    base = config_from_args(search.parser().parse_args([]), base={"num_workers": 0})
    base.data.data = str(search.demo_path())
    config = trial_config(base.to_dict(), {})
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.init()
        torch.zeros(1, device=dev)
        torch.cuda.synchronize()
    t["device context"] = time.time()
    data = prepare(config.data)
    t["data"] = time.time()
    with tempfile.TemporaryDirectory() as out:
        config.train.output_dir, config.train.num_epochs = out, 1
        trainer = Trainer(config, data, dev)
        t["trainer built"] = time.time()
        trainer.train_epoch(1)
        t["first optimizer step"] = trainer.first_step_at
    return t


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.startup", description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--output", default="benchmarks/results/startup.json")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print("STARTUP " + json.dumps(child(args.device)))
        return
    from benchmarks._common import command, write_json

    runs = []
    with tempfile.TemporaryDirectory(prefix="triton-cache") as cache:
        env = {**os.environ, "TRITON_CACHE_DIR": cache}
        for i in range(args.runs):
            flags = ["--device", args.device]
            out = subprocess.run([sys.executable, "-m", "benchmarks.startup", "--child", *flags], env=env,
                                 capture_output=True, text=True, check=True).stdout
            stamps = json.loads(next(line for line in out.splitlines() if line.startswith("STARTUP "))[8:])
            names = list(stamps)
            phases = {b: stamps[b] - stamps[a] for a, b in zip(names, names[1:])}
            total = stamps["first optimizer step"] - stamps["process"]
            runs.append({"run": i + 1, "triton_cache": "empty" if i == 0 else "filled", "phases_s": phases,
                         "process_to_first_step_s": total,
                         "context_to_first_step_s": stamps["first optimizer step"] - stamps["device context"]})
            print(f"run {i + 1} (Triton cache {runs[-1]['triton_cache']}): {total:.2f} s from process start; "
                  + ", ".join(f"{k} {v:.2f}" for k, v in phases.items()))
    write_json(args.output, {"command": command("startup", argv), "runs": runs})


if __name__ == "__main__":
    main()
