"""Search-level costs on one machine: trial start-up, GPU packing, host memory per concurrent trial.

    python -m benchmarks.search packing [--samples 12]   # same small-config search at 1 and 4 trials per GPU
    python -m benchmarks.search oom                      # issue 3's GPU table: 0.25 GPU per trial, some configs too big
    python -m benchmarks.search cpu                      # the default CPU search (python -m tune.search --device auto)
    python -m benchmarks.search shares [--budget-s 75]   # the oom space at fixed 0.125, fixed 1.0 and auto GPU shares

Trial overhead = Ray starts the trial (Tune callback) -> the trial's first optimizer step has finished; also from the
moment Tune first holds the trial pending, which counts a cold worker's process start and imports.
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

from benchmarks._common import command, reference_file, write_json
from tune import search as search_cli
from tune._table import load_trials


class TrialStarts(Callback):
    """Wall-clock time at which Tune first held each trial pending (it asks Ray for the trial's actor then), at which
    Ray started it (the actor is up: a cold worker's process start and imports are before this), and when the last one
    ended."""

    def __init__(self) -> None:
        self.pending: dict[str, float] = {}
        self.started: dict[str, float] = {}
        self.last_end = 0.0

    def on_step_begin(self, iteration, trials, **info) -> None:
        now = time.time()
        for trial in trials:
            if trial.status == "PENDING":
                self.pending.setdefault(trial.trial_id, now)

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.started.setdefault(trial.trial_id, time.time())

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.last_end = time.time()

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.last_end = time.time()


class MemorySampler:
    """Peak machine memory in use, and peak summed unique memory (USS) of the trial processes.

    USS leaves out pages shared with other processes (the object store's shared memory), so it shows
    whether each trial holds its own copy of the dataset.
    """

    def __init__(self) -> None:
        self.base = psutil.virtual_memory().used
        self.peak = self.base
        self.trials_uss_peak = 0
        self.trials_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.peak = max(self.peak, psutil.virtual_memory().used)
            uss, n = 0, 0
            for proc in psutil.process_iter(["name", "cmdline"]):
                try:
                    if ("train_trial" in " ".join(proc.info["cmdline"] or [])
                            or "ImplicitFunc" in (proc.info["name"] or "")):
                        uss += proc.memory_full_info().uss
                        n += 1
                except (psutil.Error, OSError):
                    continue
            if uss > self.trials_uss_peak:
                self.trials_uss_peak, self.trials_peak = uss, n

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
    total = time.time() - t0
    # Trials per hour over the trials' own span: Ray start-up and data loading happen once per search.
    first = min(starts.started.values())
    wall = (starts.last_end if starts.last_end > first else time.time()) - first
    table = load_trials(storage / name)
    overheads, to_entry, from_pending = [], [], []
    for d in table["trial_dir"]:
        first = _first_result(Path(d))
        tid = first.get("trial_id")
        if first.get("first_step_at") and tid in starts.started:
            overheads.append(first["first_step_at"] - starts.started[tid])
            to_entry.append(first["trial_started_at"] - starts.started[tid])
            if tid in starts.pending:
                from_pending.append(first["first_step_at"] - starts.pending[tid])
    done = int(table["status"].isin(["ok", "stopped early", "oom", "diverged"]).sum())
    counts = {k: int(v) for k, v in table["status"].value_counts().items()}
    return {
        "name": name, "argv": argv, "wall_s": wall, "command_s": total, "trials_done": done, "statuses": counts,
        "trials_per_hour": done / wall * 3600,
        "overhead_s_median": statistics.median(overheads) if overheads else None,
        "overhead_s_max": max(overheads) if overheads else None, "overhead_s": overheads,
        "to_trainable_entry_s": to_entry, "pending_to_first_step_s": from_pending,
        "host_memory_peak_mb": (mem.peak - mem.base) / 2**20,
        "trial_processes_uss_peak_mb": mem.trials_uss_peak / 2**20, "trial_processes_at_peak": mem.trials_peak,
        "table": table.drop(columns=["trial_dir", "history"]).to_dict(orient="records"),
    }


def _oom_search(args, storage: Path, path: str) -> list[str]:
    """Search flags over a space where some configs do not fit a small GPU share (issue 3's GPU table)."""
    data = reference_file(path, args.days, upstream=True)
    space = storage / "oom_space.yaml"
    storage.mkdir(parents=True, exist_ok=True)
    space.write_text("hidden_channels: {layers: [1, 3], widths: [32, 256]}\nbatch_size: [8, 64]\n"
                     "gradient_accumulation_steps: [1, 2]\n")
    return ["--data", str(data), "--include-upstream", "--num-samples", str(args.samples), "--max-epochs", "2",
            "--grace-epochs", "1", "--space", str(space), "--cpus-per-trial", "2", "--num-workers", "0",
            "--seed", "3"]


def _first_result(trial_dir: Path) -> dict:
    import json

    path = trial_dir / "result.json"
    if not path.is_file():
        return {}
    lines = path.read_text().splitlines()
    return json.loads(lines[0]) if lines else {}  # a trial the time budget ended before its first report


class Runs(list):
    """The runs so far, written to the results file after each one: a cut-off call keeps what it measured."""

    def __init__(self, output: str, command: str) -> None:
        super().__init__()
        self.output, self.command = output, command

    def append(self, run: dict) -> None:
        super().append(run)
        write_json(self.output, {"command": self.command, "runs": list(self)})


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.search", description=__doc__.split("\n")[0])
    p.add_argument("which", choices=["packing", "oom", "cpu", "shares"])
    p.add_argument("--budget-s", type=float, default=75, help="shares: each search's --time-budget-s")
    p.add_argument("--samples", type=int, default=12)
    p.add_argument("--policies", nargs="*", choices=["0.125-no-preflight", "0.125", "1", "auto"],
                   help="shares: the policies to run (default: all four)")
    p.add_argument("--days", type=int, default=200)
    p.add_argument("--epochs", type=int, default=12, help="epochs per trial in the packing runs (no early stopping)")
    p.add_argument("--storage", default="/tmp/bench_runs")
    p.add_argument("--noreuse", action="store_true", help="packing: also run 4 per GPU without actor reuse")
    p.add_argument("--output", default=None)
    args = p.parse_args(argv)
    storage = Path(args.storage)
    stamp = time.strftime("%H%M%S")
    output = args.output or f"benchmarks/results/search_{args.which}.json"
    runs = Runs(output, command("search", argv))
    if args.which == "packing":
        data = reference_file("/tmp/convlstm_reference_small.nc", 400)
        space = storage / "small_space.yaml"
        storage.mkdir(parents=True, exist_ok=True)
        space.write_text("hidden_channels: {layers: [1, 1], widths: [8, 16]}\nbatch_size: [4, 8]\n"
                         "gradient_accumulation_steps: [1]\n")
        common = ["--data", str(data), "--num-samples", str(args.samples), "--max-epochs", str(args.epochs),
                  "--grace-epochs", str(args.epochs), "--space", str(space), "--cpus-per-trial", "2",
                  "--num-workers", "0", "--seed", "1"]
        runs.append(run_one(common + ["--gpus-per-trial", "1"], storage, f"pack1-{stamp}"))
        runs.append(run_one(common + ["--gpus-per-trial", "0.25"], storage, f"pack4-{stamp}"))
        if args.noreuse:
            runs.append(run_one(common + ["--gpus-per-trial", "0.25", "--no-reuse-actors"], storage,
                                f"pack4-noreuse-{stamp}"))
        speedup = runs[1]["trials_per_hour"] / runs[0]["trials_per_hour"]
        print(f"packing: {runs[0]['trials_per_hour']:.0f} trials/h at 1 per GPU, "
              f"{runs[1]['trials_per_hour']:.0f} at 4 per GPU ({speedup:.2f}x)")
    elif args.which == "oom":
        runs.append(run_one(_oom_search(args, storage, "/tmp/convlstm_reference_up.nc") + ["--gpus-per-trial", "0.25"],
                            storage, f"oom-{stamp}"))
    elif args.which == "shares":
        # The same space, seed and wall budget at four share policies: trials finished per hour, OOMs, skips.
        common = _oom_search(args, storage, f"/tmp/convlstm_reference_up_{args.days}d.nc") + [
            "--time-budget-s", str(args.budget_s)]
        policies = {"0.125-no-preflight": ["--gpus-per-trial", "0.125", "--no-preflight"],
                    "0.125": ["--gpus-per-trial", "0.125"], "1": ["--gpus-per-trial", "1"],
                    "auto": ["--gpus-per-trial", "auto"]}
        for flags in (policies[k] for k in args.policies or policies):
            runs.append(run_one(common + flags, storage, f"share-{'-'.join(flags[1:])}-{stamp}"))
        for r in runs:
            print(f"{' '.join(r['argv'][len(common):])}: {r['trials_per_hour']:.0f} trials/h, "
                  f"statuses {r['statuses']}")
    else:
        runs.append(run_one(["--device", "auto"], storage, f"cpu-{stamp}"))
    for r in runs:
        print(f"{r['name']}: {r['trials_done']} trials in {r['wall_s']:.0f} s ({r['trials_per_hour']:.0f}/h), "
              f"overhead median {r['overhead_s_median']} s max {r['overhead_s_max']} s, "
              f"host memory +{r['host_memory_peak_mb']:.0f} MB, "
              f"trial processes USS {r['trial_processes_uss_peak_mb']:.0f} MB "
              f"({r['trial_processes_at_peak']} processes)")
        print("  overhead per trial:", [round(x, 2) for x in r["overhead_s"]], "of which to trainable entry:",
              [round(x, 2) for x in r["to_trainable_entry_s"]])
        print("  first held pending -> first optimizer step:", [round(x, 2) for x in r["pending_to_first_step_s"]])
        print(pd.DataFrame(r["table"]).to_string(index=False))


if __name__ == "__main__":
    main()
