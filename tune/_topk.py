"""tune.retrain --top-k K: the K best searched trials and the best baseline, retrained alike, picked by validation.

Each trains with the same epochs (the retrain's --num-epochs and flags) into RETRAIN_DIR/<label>/; the one with
the lowest validation loss is copied to the output folder (best/), and all are scored on the test split with the
verification table, the baseline first so that every difference is "trial - baseline" with its interval.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from data_io import ConfigError, prepare
from model.config import TrainConfig
from model.verify_table import write_metrics
from tune import experiment as ex
from tune._compare import headline, score_on_test, verdict
from tune._table import best_baseline, load_trials
from tune.outcome import FITTED

log = logging.getLogger("convlstm")
RETRAIN_DIR = "retrain"  # next to the output folder: RUNS/NAME/retrain/<label>/
COMPARISON_DIR = "comparison"


def candidates(experiment: Path, k: int) -> list[tuple[str, dict, str | None]]:
    """(label, nested config with the trainer's epochs, baseline name or None): the k best searched trials by
    val loss, then the best baseline."""
    if k < 1:
        raise ConfigError(f"--top-k must be a positive integer, but got {k}")
    trials = load_trials(experiment)
    fitted = trials[trials["status"].isin([o.value for o in FITTED]) & trials["val_loss"].notna()]
    searched = fitted[fitted["baseline"].fillna("") == ""].sort_values("val_loss", kind="stable").head(k)
    rows = [(str(r["trial_id"]), r, None) for _, r in searched.iterrows()]
    base_row = best_baseline(trials)
    if base_row is not None:
        rows.append((f"baseline-{_safe(base_row['baseline'])}", base_row, str(base_row["baseline"])))
    if not rows:
        raise ConfigError(f"{experiment}: no trial has finished an epoch yet; wait for the search, or pass --trial ID")
    out = []
    exp = ex.Experiment(experiment)
    for label, row, name in rows:
        config = exp.trial_config(Path(row["trial_dir"])).to_dict()
        config["train"]["num_epochs"] = TrainConfig().num_epochs  # the search capped it at --max-epochs
        out.append((label, config, name))
    return out


def _safe(name: str) -> str:
    return Path(str(name)).stem.replace(" ", "_")


def run_top_k(experiment: Path, k: int, out: Path, make_config: Callable[[dict], object], train: Callable,
              device: str) -> tuple[str, dict]:
    """Retrain the candidates, copy the pick into `out`, write the comparison; (picked label, its config)."""
    cands = candidates(experiment, k)
    root = out.parent / RETRAIN_DIR
    trained: dict[str, tuple[Path, float, object]] = {}
    datasets: dict[str, object] = {}
    for label, nested, name in cands:
        nested["train"]["output_dir"] = str(root / label)
        config = make_config(nested)
        key = json.dumps(asdict(config.data), sort_keys=True)
        if key not in datasets:
            datasets[key] = prepare(config.data)
        log.info("Retraining %s%s for up to %d epochs into %s", label, " (baseline)" if name else "",
                 config.train.num_epochs, config.train.output_dir)
        history = train(config, datasets[key])
        trained[label] = (Path(config.train.output_dir), min(r.val_loss for r in history), config)
    picked = min(trained, key=lambda lab: trained[lab][1])
    pick_dir, _, pick_config = trained[picked]
    out.mkdir(parents=True, exist_ok=True)
    for path in pick_dir.iterdir():
        if path.is_file():
            shutil.copy2(path, out / path.name)
    baseline = next((lab for lab, _, name in cands if name), None)
    order = ([baseline] if baseline else []) + [lab for lab in trained if lab != baseline]
    data = datasets[json.dumps(asdict(pick_config.data), sort_keys=True)]
    same = [lab for lab in order if trained[lab][2].data == pick_config.data]
    table = score_on_test({lab: trained[lab][0] / "best.pt" for lab in same}, data, device=device)
    lines = [f"Retrained {len(trained)}: " + ", ".join(f"{lab} (val_loss {trained[lab][1]:.4f})" for lab in order),
             f"Picked by validation: {picked}."]
    if baseline:
        lines += verdict(table, picked, baseline)
    else:
        lines.append("No baseline in this search (--baseline none): nothing to compare with.")
    meta = {"experiment": experiment.name, "picked": picked, "baseline": baseline or "none",
            "val_loss": {lab: trained[lab][1] for lab in order}, "reference": order[0]}
    write_metrics(table, out / COMPARISON_DIR, meta)
    summary = {**meta, "verdict": lines,
               "headline": {lab: headline(table, lab) for lab in same[1:]} if len(same) > 1 else {}}
    (out / COMPARISON_DIR / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    return picked, {"lines": lines, "table": table}
