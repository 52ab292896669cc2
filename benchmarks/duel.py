"""The duel: the default search + retrain of the top K against graphcast's default config, at equal time.

    python -m benchmarks.duel                                   # GPU, reference size: 0.25 deg, 3 files x 2 seeds
    python -m benchmarks.duel --days 60 --resolution 1.0 --num-samples 3 --max-epochs 1 --epochs 1 --files 1 \\
        --seeds 0 --device cpu                                  # CPU, tiny
    python -m benchmarks.duel --merge a.json b.json --output c.json  # one table from runs made in several calls

Per generator seed (a reference-schema file with the upstream box, benchmarks/_common.reference_file) and training
seed: `python -m tune.search` with its defaults (its default baseline included) then `python -m tune.retrain
--top-k K`, timed; then graphcast's default (`--model-type dual_stream`, batch 4) trained by our trainer for as long
as that whole search + retrain took (epochs until the time is spent, its best epoch kept). Both are scored on the
same test windows (tune/_compare.score_on_test): RMSE and CSI at 10 mm with the block-bootstrap interval of the
difference (search - baseline) per run, and over the runs the mean difference with a bootstrap interval.
Writes benchmarks/results/duel_<machine>.json with the command.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks._common import command, reference_file, write_json
from data_io import prepare
from model import checkpoint as ckpt_io
from model.config import config_from_args
from model.trainer import fit
from tune._compare import HEADLINE, headline, score_on_test


DIFFERENCE = "search pick - baseline (dual_stream by our trainer, same wall time)"


class _Spent(Exception):
    """The baseline's time is up (raised after an epoch's checkpoints are written)."""


def train_for(base: dict, seconds: float, out: Path) -> tuple[Path, int]:
    """Train `base` until `seconds` have passed (at least one epoch); its best.pt and the epochs run."""
    base = {**base, "train": {**base["train"], "output_dir": str(out), "num_epochs": 10_000}}
    config = config_from_args(argparse.Namespace(), base=base)
    data = prepare(config.data)
    started, epochs = time.perf_counter(), [0]

    def stop_when_spent(record, last_pt, final) -> None:
        epochs[0] = record.epoch
        if time.perf_counter() - started >= seconds:
            raise _Spent

    try:
        fit(config, data, on_epoch=stop_when_spent)
    except _Spent:
        pass
    return out / "best.pt", epochs[0]


def one_run(file: Path, seed: int, args, work: Path) -> dict:
    from tune import retrain, search

    data_flags = ["--data", str(file), "--include-upstream", "--seed", str(seed), "--device", args.device]
    name = f"duel-{file.stem}-s{seed}"
    started = time.perf_counter()
    search.run([*data_flags, "--num-samples", str(args.num_samples), "--max-epochs", str(args.max_epochs),
                "--storage-path", str(work), "--name", name])
    retrain.run([str(work / name), "--top-k", str(args.top_k), "--num-epochs", str(args.epochs), "--device",
                 args.device, "--num-cases", "0"])
    search_seconds = time.perf_counter() - started
    picked = work / name / "best" / "best.pt"

    base = {"data": {"data": str(file), "include_upstream": True}, "model": {"model_type": "dual_stream"},
            "train": {"seed": seed, "device": args.device, "num_workers": 0}}
    baseline_pt, baseline_epochs = train_for(base, search_seconds, work / f"{name}-baseline")

    data = prepare(ckpt_io.config_from_checkpoint(ckpt_io.load(picked)).data)
    table = score_on_test({"baseline": baseline_pt, "search": picked}, data, device=args.device)
    scores = headline(table, "search")
    print(f"{file.name} seed {seed}: search + retrain {search_seconds:.0f} s; baseline {baseline_epochs} epochs; "
          + "; ".join(f"{label} {scores[s]['value']:.4g} vs {scores[s]['reference_value']:.4g} "
                      f"({scores[s]['difference']:+.3g} [{scores[s]['low']:+.3g}, {scores[s]['high']:+.3g}])"
                      for s, label, _ in HEADLINE if s in scores), flush=True)
    return {"file": file.name, "train_seed": seed, "seconds": search_seconds, "baseline_epochs": baseline_epochs,
            "picked": str(ckpt_io.load(picked)["config"]["model"]["hidden_channels"]),
            "scores": {s: {k: v for k, v in scores[s].items() if k != "per_lead"} for s in scores}}


def mean_difference(values: list[float], n_boot: int = 2000, seed: int = 0) -> dict:
    """The mean of the per-run differences and its 95% bootstrap interval over runs (none from one run)."""
    a = np.asarray(values, dtype=float)
    out = {"mean": float(a.mean()), "runs": len(a)}
    if len(a) > 1:
        means = np.random.default_rng(seed).choice(a, (n_boot, len(a))).mean(axis=1)
        out.update(low=float(np.quantile(means, 0.025)), high=float(np.quantile(means, 0.975)))
    return out


def machine_name(device: str) -> str:
    if device != "cpu" and torch.cuda.is_available():
        return re.sub(r"[^a-z0-9]+", "_", torch.cuda.get_device_name(0).lower()).strip("_")
    return "cpu"


def summarise(runs: list[dict]) -> dict:
    """Over the runs: each headline score's mean difference (search - baseline), its interval, and the wins."""
    summary = {}
    for score, label, higher in HEADLINE:
        diffs = [r["scores"][score]["difference"] for r in runs if score in r["scores"]
                 and math.isfinite(r["scores"][score].get("difference", math.nan))]
        if diffs:
            m = mean_difference(diffs)
            wins = sum((d > 0) == higher and d != 0 for d in diffs)
            outside = sum(r["scores"][score]["low"] > 0 or r["scores"][score]["high"] < 0 for r in runs
                          if score in r["scores"] and "low" in r["scores"][score])
            summary[score] = {**m, "search_better_in": wins, "runs_outside_interval": outside,
                              "higher_is_better": higher}
            interval = f" [{m['low']:+.3g}, {m['high']:+.3g}]" if "low" in m else " (one run: no interval over runs)"
            print(f"{label}: search - baseline, mean over {len(diffs)} runs {m['mean']:+.4g}{interval}; "
                  f"search better in {wins} of {len(diffs)}", flush=True)
    return summary


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--files", type=int, default=3, help="generator seeds (one reference-schema file each)")
    p.add_argument("--first-file", type=int, default=0, help="the first generator seed (split a duel over calls)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds per file")
    p.add_argument("--days", type=int, default=240, help="days per file (12-hourly: 480 steps at 240)")
    p.add_argument("--resolution", type=float, default=0.25)
    p.add_argument("--num-samples", type=int, default=8, help="searched trials (tune.search's default)")
    p.add_argument("--max-epochs", type=int, default=3, help="epochs per trial (tune.search's default)")
    p.add_argument("--epochs", type=int, default=8, help="retrain epochs of each top-K candidate")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--work", help="folder for the files and runs (default: a temporary one)")
    p.add_argument("--output", help="default: benchmarks/results/duel_<machine>.json")
    p.add_argument("--merge", nargs="+", metavar="JSON", help="combine the runs of earlier results files, run none")
    args = p.parse_args(argv)
    cmd = command("duel", argv)
    output = args.output or f"benchmarks/results/duel_{machine_name(args.device)}.json"
    runs, commands, ran_on = [], [cmd], []
    if args.merge:
        for path in args.merge:
            earlier = json.loads(Path(path).read_text())
            runs += earlier["runs"]
            commands += earlier.get("commands", [earlier.get("command")])
            ran_on.append(earlier.get("machine"))
        commands.remove(cmd)
    else:
        work = Path(args.work or tempfile.mkdtemp(prefix="duel"))
        for f in range(args.first_file, args.first_file + args.files):
            file = reference_file(work / f"ref_seed{f}_{args.resolution:g}deg.nc", days=args.days, upstream=True,
                                  seed=f, resolution=args.resolution)
            for s in args.seeds:
                runs.append(one_run(file, s, args, work))
                # After every run: a call cut off at its time limit keeps the runs it finished.
                write_json(output, {"command": cmd, "commands": commands, "args": vars(args), "runs": runs,
                                    "mean_difference": summarise(runs), "difference": DIFFERENCE})
    write_json(output, {"command": cmd, "commands": commands, "args": vars(args), "runs": runs,
                        "mean_difference": summarise(runs), "difference": DIFFERENCE,
                        **({"runs_made_on": ran_on} if ran_on else {})})
    print(f"Wrote {output}")


if __name__ == "__main__":
    main()
