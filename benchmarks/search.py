"""Search-level costs on one machine: trial start-up, GPU packing, host memory per concurrent trial.

    python -m benchmarks.search packing [--samples 12]      # same small-config search at 1 and 4 trials per GPU
    python -m benchmarks.search oom                         # issue 3's GPU table: 0.25 GPU per trial, some configs too big
    python -m benchmarks.search cpu                         # the default CPU search (python -m tune.search --device auto)

Trial overhead = Ray starts the trial (Tune callback) -> the trial's first optimizer step has finished.
Host memory = peak of the machine's used memory during the search minus before it (sampled every 0.2 s).
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from pathlib import Path

import pandas as pd
import psutil
from ray.tune import Callback

from benchmarks._common import reference_file, write_json
from tune import search as search_cli
from tune._table import load_trials


class TrialStarts(Callback):
    """Wall-clock time at which Ray started each trial."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.started.setdefault(trial.trial_id, time.time())


class MemorySampler:
    def __init__(self, period: float = 0.2) -> None:
        self.base = psutil.virtual_memory().used
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, psutil.virtual_memory().used)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def run_one(argv: list[str], storage: Path, name: str) -> dict:
    starts = TrialStarts()
    t0 = time.time()
    with MemorySampler() as mem:
        search_cli.run(argv + ["--storage-path", str(storage), "--name", name], callbacks=[starts])
    wall = time.time() - t0
    table = load_trials(storage / name)
    overheads = []
    for d in table["trial_dir"]:
        first = _first_result(Path(d))
        tid = first.get("trial_id")
        if first.get("first_step_at") and tid in starts.started:
            overheads.append(first["first_step_at"] - starts.started[tid])
    done = int(table["status"].isin(["ok", "stopped early", "oom", "diverged"]).sum())
    return {
        "name": name, "argv": argv, "wall_s": wall, "trials_done": done, "trials_per_hour": done / wall * 3600,
        "overhead_s_median": statistics.median(overheads) if overheads else None,
        "overhead_s_max": max(overheads) if overheads else None, "overhead_s": overheads,
        "host_memory_peak_mb": (mem.peak - mem.base) / 2**20,
        "table": table.drop(columns=["trial_dir", "history"]).to_dict(orient="records"),
    }


def _first_result(trial_dir: Path) -> dict:
    import json

    path = trial_dir / "result.json"
    if not path.is_file():
        return {}
    line = path.read_text().splitlines()[0]
    return json.loads(line)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.search", description=__doc__.split("\n")[0])
    p.add_argument("which", choices=["packing", "oom", "cpu"])
    p.add_argument("--samples", type=int, default=12)
    p.add_argument("--days", type=int, default=200)
    p.add_argument("--storage", default="/tmp/bench_runs")
    p.add_argument("--output", default=None)
    args = p.parse_args(argv)
    storage = Path(args.storage)
    stamp = time.strftime("%H%M%S")
    runs = []
    if args.which == "packing":
        data = reference_file("/tmp/convlstm_reference_small.nc", args.days)
        space = storage / "small_space.yaml"
        storage.mkdir(parents=True, exist_ok=True)
        space.write_text("hidden_channels: {layers: [1, 1], widths: [8, 16]}\nbatch_size: [8, 16]\n"
                         "gradient_accumulation_steps: [1]\n")
        common = ["--data", str(data), "--num-samples", str(args.samples), "--max-epochs", "2", "--grace-epochs", "2",
                  "--space", str(space), "--cpus-per-trial", "2", "--num-workers", "0", "--seed", "1"]
        runs.append(run_one(common + ["--gpus-per-trial", "1"], storage, f"pack1-{stamp}"))
        runs.append(run_one(common + ["--gpus-per-trial", "0.25"], storage, f"pack4-{stamp}"))
        runs.append(run_one(common + ["--gpus-per-trial", "0.25", "--no-reuse-actors"], storage, f"pack4-noreuse-{stamp}"))
        speedup = runs[1]["trials_per_hour"] / runs[0]["trials_per_hour"]
        print(f"packing: {runs[0]['trials_per_hour']:.0f} trials/h at 1 per GPU, {runs[1]['trials_per_hour']:.0f} at 4 per GPU "
              f"({speedup:.2f}x)")
    elif args.which == "oom":
        data = reference_file("/tmp/convlstm_reference_up.nc", args.days, upstream=True)
        space = storage / "oom_space.yaml"
        storage.mkdir(parents=True, exist_ok=True)
        space.write_text("hidden_channels: {layers: [1, 3], widths: [16, 64, 128]}\nbatch_size: [4, 16, 32]\n"
                         "gradient_accumulation_steps: [1, 2]\n")
        argv_ = ["--data", str(data), "--include-upstream", "--num-samples", str(args.samples), "--max-epochs", "2",
                 "--grace-epochs", "1", "--space", str(space), "--gpus-per-trial", "0.25", "--cpus-per-trial", "2",
                 "--num-workers", "0", "--seed", "3"]
        runs.append(run_one(argv_, storage, f"oom-{stamp}"))
    else:
        runs.append(run_one(["--device", "auto"], storage, f"cpu-{stamp}"))
    for r in runs:
        print(f"{r['name']}: {r['trials_done']} trials in {r['wall_s']:.0f} s ({r['trials_per_hour']:.0f}/h), "
              f"overhead median {r['overhead_s_median']} s max {r['overhead_s_max']} s, "
              f"host memory +{r['host_memory_peak_mb']:.0f} MB")
        print(pd.DataFrame(r["table"]).to_string(index=False))
    write_json(args.output or f"benchmarks/results/search_{args.which}.json",
               {"command": "python -m benchmarks.search " + " ".join(argv or []), "runs": runs})


if __name__ == "__main__":
    main()
