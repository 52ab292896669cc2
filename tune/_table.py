"""The trial table, read from the experiment folder itself (params.json, result.json, error.txt per trial).

Reading the folder rather than ResultGrid.get_dataframe() keeps trials that errored before reporting, works
while a search is still running, and works on a folder copied from another machine.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from pathlib import Path

import pandas as pd

from tune.space import params_to_overrides

COLUMNS = [
    "rank", "trial_id", "status", "device", "hidden_channels", "batch_size", "accumulation", "effective_batch",
    "learning_rate", "epochs", "time_per_epoch_s", "peak_memory_mb", "val_loss", "val_rmse",
]


def trial_dirs(experiment: Path) -> list[Path]:
    return sorted(p.parent for p in Path(experiment).glob("*/params.json"))


def read_results(trial_dir: Path) -> list[dict]:
    path = trial_dir / "result.json"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut off by a crash mid-write
            break
    return rows


def trial_row(trial_dir: Path) -> dict:
    params = json.loads((trial_dir / "params.json").read_text())
    results = read_results(trial_dir)
    last = results[-1] if results else {}
    over = params_to_overrides(params)
    errored = _failed_after(trial_dir, last.get("timestamp", 0))
    status = last.get("status")
    if errored and status not in ("oom", "diverged"):
        status = "error"
    elif status == "ok" and not last.get("trial_finished"):
        status = "stopped early"
    elif status is None:
        status = "error" if errored else "pending"
    # One record per epoch: a trial retried from its checkpoint reports again the epochs after that checkpoint.
    by_epoch = {r.get("epoch", i): r for i, r in enumerate(results) if r.get("status") == "ok"}
    ok_epochs = [by_epoch[e] for e in sorted(by_epoch)]
    val = last.get("val_loss")
    batch = last.get("batch_size", over.get("batch_size"))
    accum = last.get("gradient_accumulation_steps", over.get("gradient_accumulation_steps"))
    hidden = last.get("hidden_channels") or " ".join(map(str, over.get("hidden_channels", [])))
    return {
        "trial_id": last.get("trial_id") or _id_from_dirname(trial_dir.name),
        "status": status,
        "device": last.get("device", ""),
        "hidden_channels": hidden,
        "batch_size": batch,
        "accumulation": accum,
        "effective_batch": last.get("effective_batch_size", (batch or 0) * (accum or 0) or None),
        "learning_rate": last.get("learning_rate", over.get("learning_rate")),
        "epochs": len(ok_epochs),
        "time_per_epoch_s": _mean([r.get("time_per_epoch_s") for r in ok_epochs]),
        "peak_memory_mb": last.get("peak_memory_mb"),
        "val_loss": val if isinstance(val, (int, float)) and math.isfinite(val) else None,
        "val_rmse": last.get("val_rmse") if status not in ("oom", "diverged") else None,
        "trial_dir": str(trial_dir),
        "history": [r.get("val_loss") for r in ok_epochs],
    }


def _failed_after(trial_dir: Path, last_report: float) -> bool:
    """Whether the trial's last failure came after its last report.

    A worker that died and was retried from its checkpoint (FailureConfig) leaves error.txt behind, which Ray
    rewrites later on; "Failure # N (occurred at <local time>)" lines date each failure.
    """
    text_file, pickle_file = trial_dir / "error.txt", trial_dir / "error.pkl"
    if not text_file.is_file():
        return pickle_file.is_file()
    stamps = re.findall(r"occurred at (\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d)", text_file.read_text(errors="replace"))
    if not stamps:
        return True
    # Both clocks have whole seconds: a retried trial can report again within the second of its failure, so only a
    # failure in a later second than the last report counts as the trial's end.
    return dt.datetime.strptime(stamps[-1], "%Y-%m-%d_%H-%M-%S").timestamp() > last_report


def _id_from_dirname(name: str) -> str:
    """Ray names trial folders <trainable>_<trial id>_<index>_<params>_<date>; the id is 8 hex digits (5 + _00000
    for trials Ray generates itself)."""
    match = re.search(r"_([0-9a-f]{8}|[0-9a-f]{5}_\d{5})_\d+(?:_|$)", name)
    return match.group(1) if match else name


def _mean(values: list) -> float | None:
    values = [v for v in values if isinstance(v, (int, float))]
    return sum(values) / len(values) if values else None


def load_trials(experiment: str | Path) -> pd.DataFrame:
    """One row per trial, ranked by val loss (finished and early-stopped first, failures after)."""
    rows = [trial_row(d) for d in trial_dirs(Path(experiment))]
    df = pd.DataFrame(rows, columns=[c for c in COLUMNS if c != "rank"] + ["trial_dir", "history"])
    order = df.assign(_bad=df["val_loss"].isna()).sort_values(["_bad", "val_loss"], kind="stable").index
    df = df.loc[order].reset_index(drop=True)
    df.insert(0, "rank", range(1, len(df) + 1))
    return df


# Display formats of the number columns; the search's printout and every report format share them.
NUMBER_FORMATS = {"learning_rate": "{:.2e}", "time_per_epoch_s": "{:.2f}", "peak_memory_mb": "{:.0f}",
                  "val_loss": "{:.4f}", "val_rmse": "{:.4g}", "batch_size": "{:.0f}", "accumulation": "{:.0f}",
                  "effective_batch": "{:.0f}"}


def formatted(df: pd.DataFrame) -> pd.DataFrame:
    """The table's columns as display strings (empty for missing values)."""
    view = df[COLUMNS].astype(object)
    for col in COLUMNS:
        fmt = NUMBER_FORMATS.get(col, "{}")
        view[col] = view[col].map(lambda v, f=fmt: "" if _missing(v) else f.format(v))
    return view


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def format_table(df: pd.DataFrame) -> str:
    return formatted(df).to_string(index=False) if len(df) else "(no trials)"
