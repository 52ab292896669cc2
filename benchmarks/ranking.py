"""Do search rankings survive retraining? Spearman correlation between each trial's search score and its test score.

    python -m benchmarks.ranking --device cpu --resolution 1.0 --num-samples 20   # CPU, 1 degree (~30 min, 2 cores)
    python -m benchmarks.ranking --device cuda                                    # GPU, 0.25 degree

One search with the default space on a reference-schema file, every trial run to --max-epochs (no early stopping),
so that each trial's whole validation history is known; then every trial is retrained from scratch for
--retrain-epochs by the trainer and scored on the test split (latitude-weighted RMSE in mm, evaluate_checkpoint).
Schedules are replayed on the recorded histories: ASHA with (max epochs, grace, reduction factor) stops a trial at
a rung when its value is worse than the rung's 1/rf quantile so far (trials in the order they started), and the
trial's search score is its last value, as the trial table ranks it. For each schedule and objective (normalised
val loss, val RMSE in mm): Spearman's rho of search score against test RMSE, and the test RMSE of the trial the
search would pick against the best one. Writes benchmarks/results/ranking_<device>.json.
"""

from __future__ import annotations

import argparse
import itertools
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks._common import command, reference_file, write_json
from model.evaluate import evaluate_checkpoint
from model.trainer import fit
from tune import experiment as ex
from tune._table import load_trials

OBJECTIVES = {"val_loss": "val_loss", "val_rmse": "val_rmse"}


def asha_scores(histories: list[list[float]], max_t: int, grace: int, rf: int) -> list[float]:
    """Each trial's last value under ASHA(max_t, grace, rf), replayed in trial order on full histories."""
    rungs = []
    t = grace
    while t < max_t:
        rungs.append(t)
        t *= rf
    recorded: dict[int, list[float]] = {r: [] for r in rungs}
    scores = []
    for h in histories:
        last = h[min(max_t, len(h)) - 1]
        for r in rungs:
            if r > len(h):
                break
            value = h[r - 1]
            seen = recorded[r]
            cutoff = np.nanpercentile(seen, 100 / rf) if seen else None  # the best 1/rf go on
            seen.append(value)
            if cutoff is not None and value > cutoff:
                last = value
                break
        scores.append(last)
    return scores


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ranking", description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--num-samples", type=int, default=20)
    p.add_argument("--max-epochs", type=int, default=4)
    p.add_argument("--retrain-epochs", type=int, default=6)
    p.add_argument("--days", type=int, default=90)
    p.add_argument("--resolution", type=float, default=0.25)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default=None)
    args = p.parse_args(argv)

    data_path = reference_file(f"/tmp/ranking_ref_{args.days}d_{args.resolution}.nc", days=args.days,
                               resolution=args.resolution, seed=args.seed)
    work = Path(tempfile.mkdtemp(prefix="ranking-"))
    t0 = time.perf_counter()
    search = subprocess.run(
        [sys.executable, "-m", "tune.search", "--data", str(data_path), "--num-samples", str(args.num_samples),
         "--max-epochs", str(args.max_epochs), "--grace-epochs", str(args.max_epochs), "--baseline", "none",
         "--device", args.device, "--storage-path", str(work), "--name", "rank", "--seed", str(args.seed)],
        capture_output=True, text=True)
    search_s = time.perf_counter() - t0
    if search.returncode != 0:
        raise SystemExit(search.stdout[-3000:] + search.stderr[-3000:])
    experiment = work / "rank"
    table = load_trials(experiment)
    table = table[table["status"].isin(["ok"])].copy()
    base = ex.Experiment(experiment).base()
    trials = []
    for _, row in table.iterrows():
        results = ex.results(Path(row["trial_dir"]))
        by_epoch = {r["epoch"]: r for r in results if r.get("status") == "ok"}
        histories = {k: [by_epoch[e][k] for e in sorted(by_epoch)] for k in OBJECTIVES}
        config = ex.trial_config(base, ex.params(Path(row["trial_dir"])))
        config.train.num_epochs, config.train.early_stopping_patience = args.retrain_epochs, args.retrain_epochs
        config.train.output_dir = str(work / "retrain" / row["trial_id"])
        fit(config)
        scored = evaluate_checkpoint(Path(config.train.output_dir) / "best.pt", device=args.device)
        channel = next(iter(scored["channels"].values()))
        trials.append({"trial_id": row["trial_id"], "started": float(results[0].get("trial_started_at", 0)),
                       "hidden_channels": row["hidden_channels"], "batch_size": int(row["batch_size"]),
                       "histories": histories, "test_rmse": float(np.mean(channel["rmse"]["model"]))})
        print(f"{row['trial_id']}: test RMSE {trials[-1]['test_rmse']:.3f}, val loss {histories['val_loss']}",
              flush=True)
    trials.sort(key=lambda t: t["started"])
    test = [t["test_rmse"] for t in trials]
    rows = []
    for (max_t, grace, rf), objective in itertools.product(
            [(args.max_epochs, 1, 2), (args.max_epochs, 1, 3), (args.max_epochs, 2, 2), (2, 1, 2), (1, 1, 2)],
            OBJECTIVES):
        if grace > max_t:
            continue
        scores = asha_scores([t["histories"][objective] for t in trials], max_t, grace, rf)
        rho = pd.Series(scores).rank().corr(pd.Series(test).rank())  # Spearman: Pearson on the ranks
        pick = int(np.argmin(scores))
        rows.append({"max_epochs": max_t, "grace": grace, "reduction_factor": rf, "objective": objective,
                     "spearman": float(rho), "pick_test_rmse": test[pick], "best_test_rmse": min(test)})
    result = {"command": command("ranking", argv), "data": str(data_path),
              "search_s": search_s, "trials": trials, "schedules": rows}
    output = args.output or f"benchmarks/results/ranking_{args.device}.json"
    write_json(output, result)
    print("| max epochs | grace | rf | objective | Spearman rho | pick's test RMSE | best test RMSE |")
    print("|---:|---:|---:|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['max_epochs']} | {r['grace']} | {r['reduction_factor']} | {r['objective']} | "
              f"{r['spearman']:+.2f} | {r['pick_test_rmse']:.3f} | {r['best_test_rmse']:.3f} |")
    print(f"results in {output}")


if __name__ == "__main__":
    main()
