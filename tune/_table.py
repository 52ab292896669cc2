"""The trial table, read from the experiment folder itself (params.json, result.json, error.txt per trial).

Reading the folder rather than ResultGrid.get_dataframe() keeps trials that errored before reporting, works
while a search is still running, and works on a folder copied from another machine.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from pathlib import Path

import pandas as pd

from tune import _preflight
from tune import experiment as ex
from tune._baseline import name_of
from tune.outcome import INFEASIBLE, Outcome
from tune.space import params_to_overrides

COLUMNS = [
    "rank", "trial_id", "status", "baseline", "device", "hidden_channels", "batch_size", "accumulation",
    "effective_batch", "rescued_batch", "learning_rate", "epochs", "time_per_epoch_s", "peak_memory_mb",
    "predicted_mb", "available_mb", "val_loss",
    "val_rmse", "vs_baseline",
]
# Columns that show a config field; every other searched field gets a column of its own name after these.
FIELD_COLUMNS = {"hidden_channels": "hidden_channels", "batch_size": "batch_size",
                 "accumulation": "gradient_accumulation_steps", "learning_rate": "learning_rate"}


def columns(df: pd.DataFrame) -> list[str]:
    """COLUMNS, with the searched fields that have no column of their own inserted after learning_rate."""
    metric = [df.attrs["objective"][0]] if df.attrs.get("objective", ("val_loss",))[0] != "val_loss" else []
    extra = [c for c in df.columns if c not in COLUMNS and c not in ("trial_dir", "history", *metric)]
    at = COLUMNS.index("learning_rate") + 1
    return COLUMNS[:at] + extra + COLUMNS[at:] + metric


def trial_dirs(experiment: Path) -> list[Path]:
    return ex.Experiment(experiment).trial_dirs()


def read_results(trial_dir: Path) -> list[dict]:
    return ex.results(trial_dir)


def outcome(last: dict, errored: bool) -> Outcome:
    """How the trial ended, from its last report and whether it failed after that report."""
    status = last.get("status")
    if errored and status not in INFEASIBLE:
        return Outcome.ERROR
    if status is None:
        return Outcome.ERROR if errored else Outcome.PENDING
    try:
        status = Outcome(status)
    except ValueError:  # a status this version does not know (a folder from a newer one): not a usable result
        return Outcome.ERROR
    if status is Outcome.OK and not last.get("trial_finished"):
        return Outcome.STOPPED_EARLY
    return status


def trial_row(trial_dir: Path, base: dict | None = None, searched: list[str] = ()) -> dict:
    results = ex.results(trial_dir)
    last = results[-1] if results else {}
    status = outcome(last, _failed_after(trial_dir, last.get("timestamp", 0)))
    # One record per epoch: a trial retried from its checkpoint reports again the epochs after that checkpoint.
    by_epoch = {r.get("epoch", i): r for i, r in enumerate(results) if r.get("status") == Outcome.OK}
    ok_epochs = [by_epoch[e] for e in sorted(by_epoch)]
    val = last.get("val_loss")
    values = _config_values(ex.params(trial_dir), base)
    batch, accum = values.get("batch_size"), values.get("gradient_accumulation_steps")
    row = {
        "trial_id": last.get("trial_id") or _id_from_dirname(trial_dir.name),
        "status": status.value,
        "baseline": name_of(ex.params(trial_dir)) or "",
        "device": last.get("device", ""),
        **_field_cells(values, searched),
        "effective_batch": last.get("effective_batch_size", (batch or 0) * (accum or 0) or None),
        "rescued_batch": last.get("rescued_batch"),  # the batch an OOM rescue ran it at (tune/_rescue.py)
        # The last epoch trained, not the rows: after a worker restart Ray can restore result.json from its last
        # experiment sync, without the rows reported since (the restored trial does not train them again).
        "epochs": max(by_epoch) if by_epoch else 0,
        "time_per_epoch_s": _mean([r.get("time_per_epoch_s") for r in ok_epochs]),
        "peak_memory_mb": last.get("peak_memory_mb"),
        "val_loss": val if isinstance(val, (int, float)) and math.isfinite(val) else None,
        "val_rmse": last.get("val_rmse") if not status.infeasible else None,
        "trial_dir": str(trial_dir),
        "history": [r.get("val_loss") for r in ok_epochs],
    }
    key, column, _ = ex.objective(base)
    if key != "val_loss":  # --metric: its last value, shown and ranked by
        value = last.get(key)
        row[column] = value if not status.infeasible and isinstance(value, (int, float)) else None
    return row


def skipped_row(decision: dict, base: dict | None, searched: list[str] = ()) -> dict:
    """A config the memory pre-flight did not launch (tune/_preflight.py): its params and the predicted memory."""
    params = decision.get("params") or {}
    values = _config_values(params, base)
    batch, accum = values.get("batch_size"), values.get("gradient_accumulation_steps")
    return {
        "trial_id": decision["trial_id"], "status": Outcome.SKIPPED.value, "baseline": name_of(params) or "",
        "device": "", **_field_cells(values, searched),
        "effective_batch": (batch or 0) * (accum or 0) or None, "rescued_batch": None, "epochs": 0,
        "time_per_epoch_s": None, "peak_memory_mb": None, "predicted_mb": decision.get("predicted_mb"),
        "available_mb": decision.get("available_mb"), "val_loss": None, "val_rmse": None, "trial_dir": "",
        "history": [],
    }


def _field_cells(values: dict, searched: list[str]) -> dict:
    """The table's config columns: FIELD_COLUMNS, then every other searched field under its own name."""
    return {**{col: _shown(values.get(field)) for col, field in FIELD_COLUMNS.items()},
            **{key: _shown(values.get(key)) for key in searched if key not in FIELD_COLUMNS.values()}}


def _config_values(params: dict, base: dict | None) -> dict:
    """The trial's full config, flat; its suggested params alone when the search's config is unknown."""
    if base is None:
        return params_to_overrides(params)
    config = ex.trial_config(base, params).to_dict()
    return {k: v for section in config.values() for k, v in section.items()}


def _shown(value):
    """A list field (hidden_channels '16 32') as text; everything else as it is."""
    return " ".join(map(str, value)) if isinstance(value, list) else value


def _failed_after(trial_dir: Path, last_report: float) -> bool:
    """Whether the trial's last failure came after its last report.

    A worker that died and was retried from its checkpoint (FailureConfig) leaves error.txt behind, which Ray
    rewrites later on; "Failure # N (occurred at <local time>)" lines date each failure.
    """
    text_file, pickle_file = trial_dir / ex.ERROR_TXT, trial_dir / ex.ERROR_PKL  # the pickle: existence only
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
    """One row per trial, ranked by the search's objective (val loss, or --metric's column; finished and
    early-stopped first, failures after), with a column for every searched config field."""
    exp = ex.Experiment(Path(experiment))
    base = exp.base() if exp.is_search() else None
    searched = exp.searched_keys()
    rows = [trial_row(d, base, searched) for d in exp.trial_dirs()]
    decisions = _preflight.decisions(Path(experiment))
    launched = {d["trial_id"]: d for d in decisions if not d.get("skipped")}
    for row in rows:
        row["predicted_mb"] = launched.get(row["trial_id"], {}).get("predicted_mb")
        row["available_mb"] = launched.get(row["trial_id"], {}).get("available_mb")
    rows += [skipped_row(d, base, searched) for d in decisions if d.get("skipped")]
    extra = [k for k in searched if k not in FIELD_COLUMNS.values()]
    at = COLUMNS.index("learning_rate") + 1
    _, column, mode = ex.objective(base)
    metric = [column] if column != "val_loss" else []
    df = pd.DataFrame(rows, columns=COLUMNS[1:at] + extra + COLUMNS[at:-1] + metric + ["trial_dir", "history"])
    order = df.assign(_bad=df[column].isna()).sort_values(["_bad", column], ascending=[True, mode == "min"],
                                                          kind="stable").index
    df = df.loc[order].reset_index(drop=True)
    df.insert(0, "rank", range(1, len(df) + 1))
    df.attrs["objective"] = (column, mode)
    df["vs_baseline"] = vs_baseline(df)
    return df


def best_baseline(df: pd.DataFrame) -> pd.Series | None:
    """The baseline trial with the lowest val loss (None when no baseline has one)."""
    return ex.best_trial(df[df["baseline"].fillna("") != ""]) if "baseline" in df else None


def vs_baseline(df: pd.DataFrame) -> pd.Series:
    """Each trial's val loss relative to the best baseline's: -0.1 = 10% lower (better); empty without one."""
    best = best_baseline(df)
    if best is None or not best["val_loss"] > 0:
        return pd.Series([None] * len(df), index=df.index, dtype=object)
    return df["val_loss"] / best["val_loss"] - 1


# Display formats of the number columns; the search's printout and every report format share them.
NUMBER_FORMATS = {"learning_rate": "{:.2e}", "time_per_epoch_s": "{:.2f}", "peak_memory_mb": "{:.0f}",
                  "val_loss": "{:.4f}", "val_rmse": "{:.4g}", "batch_size": "{:.0f}", "accumulation": "{:.0f}",
                  "effective_batch": "{:.0f}", "rescued_batch": "{:.0f}", "vs_baseline": "{:+.1%}",
                  "predicted_mb": "{:.0f}", "available_mb": "{:.0f}"}


def formatted(df: pd.DataFrame) -> pd.DataFrame:
    """The table's columns as display strings (empty for missing values)."""
    cols = columns(df)
    view = df[cols].astype(object)
    for col in cols:
        fmt = NUMBER_FORMATS.get(col, "{:.3g}" if pd.api.types.is_float_dtype(df[col]) else "{}")
        view[col] = view[col].map(lambda v, f=fmt: "" if _missing(v) else f.format(v))
    return view


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def format_table(df: pd.DataFrame) -> str:
    return formatted(df).to_string(index=False) if len(df) else "(no trials)"
