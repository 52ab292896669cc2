"""The search's objectives (--objective val_loss:min,time_per_epoch_s:min), the Pareto set, and picks from it.

One objective is the single-objective search it always was. Several make a multi-objective Optuna study (TPE
supports it); ASHA, which needs one number, stops trials on the first objective only, and Optuna, which cannot
prune multi-objective studies, gets each trial's final values.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from data_io import ConfigError
from model.trainer import EpochRecord
from tune import experiment as ex
from tune.outcome import FITTED

DEFAULT = "val_loss:min"
# What every epoch reports that can rank a trial: the epoch record's numbers (tune/trainable.py reports them all).
METRICS = tuple(f.name for f in dataclasses.fields(EpochRecord)
                if f.name not in ("epoch", "device", "first_step_at", "effective_batch_size", "learning_rate"))
MODES = {"min": "min", "max": "max", "minimize": "min", "maximize": "max"}


@dataclass(frozen=True)
class Objective:
    metric: str
    mode: str  # "min" or "max"

    def __str__(self) -> str:
        return f"{self.metric}:{self.mode}"


def parse(text: str | None) -> list[Objective]:
    """`val_loss,time_per_epoch_s` or `val_loss:min,samples_per_s:max` (mode default: min); ConfigError else."""
    objectives = []
    for part in (text or DEFAULT).split(","):
        metric, _, mode = part.strip().partition(":")
        metric, mode = metric.strip(), (mode.strip().lower() or "min")
        if metric not in METRICS:
            raise ConfigError(f"--objective {text}: {metric!r} is not a reported metric; choose from "
                              f"{', '.join(METRICS)} (e.g. --objective val_loss:min,time_per_epoch_s:min)")
        if mode not in MODES:
            raise ConfigError(f"--objective {text}: mode {mode!r} of {metric} must be min or max")
        objectives.append(Objective(metric, MODES[mode]))
    if len({o.metric for o in objectives}) != len(objectives):
        raise ConfigError(f"--objective {text}: a metric is named twice; name each once")
    return objectives


def ray_metric(objectives: list[Objective]) -> tuple[str | list[str], str | list[str]]:
    """OptunaSearch's metric and mode: plain for one objective, lists for several (a multi-objective study)."""
    if len(objectives) == 1:
        return objectives[0].metric, objectives[0].mode
    return [o.metric for o in objectives], [o.mode for o in objectives]


def of_experiment(experiment) -> list[Objective]:
    """The objectives the search in this folder ran with (search.yaml; val_loss:min for an older folder)."""
    e = ex.Experiment(experiment)
    return parse((e.search().get("search") or {}).get("objective") if e.is_search() else None)


def marked(table: pd.DataFrame, objectives: list[Objective]) -> pd.DataFrame:
    """A multi-objective search's table with its objectives' columns and a `pareto` column (True in the set)."""
    table = with_metrics(table, objectives)
    return table.assign(pareto=pareto(table, objectives)) if len(objectives) > 1 else table


def with_metrics(table: pd.DataFrame, objectives: list[Objective]) -> pd.DataFrame:
    """The table with a column for every objective: an objective the table has no column for (samples_per_s,
    train_loss) is the trial's last report's value."""
    missing = [o.metric for o in objectives if o.metric not in table]
    if not missing or "trial_dir" not in table:
        return table
    table = table.copy()
    last = [(ex.results(d) or [{}])[-1] for d in table["trial_dir"]]
    for metric in missing:
        table[metric] = [r.get(metric) if r.get("status") in [o.value for o in FITTED] else None for r in last]
    return table


def pareto(table: pd.DataFrame, objectives: list[Objective]) -> pd.Series:
    """True for the trials no other trial beats on every objective (and strictly on one); only trials that trained
    (ok or stopped early) with every objective's value count."""
    cols = [o.metric for o in objectives]
    usable = table["status"].isin([o.value for o in FITTED])
    for col in cols:
        usable &= pd.to_numeric(table[col], errors="coerce").map(lambda v: isinstance(v, float) and math.isfinite(v))
    # Everything minimised: a max objective is negated.
    values = np.array([[(-1 if o.mode == "max" else 1) * float(table.at[i, o.metric]) for o in objectives]
                       for i in table.index[usable]]).reshape(-1, len(objectives))
    front = [not any(np.all(other <= v) and np.any(other < v) for other in values) for v in values]
    out = pd.Series(False, index=table.index)
    out[table.index[usable]] = front
    return out


PICK = re.compile(r"^fastest-within\s+(\d+(?:\.\d+)?)\s*%$")


def pick(table: pd.DataFrame, objectives: list[Objective], rule: str, speed: str = "time_per_epoch_s") -> pd.Series:
    """`fastest-within P%`: of the Pareto set, the trial with the lowest `speed` whose first objective is within P%
    of the best first objective. ConfigError when the rule does not parse or no trial qualifies."""
    match = PICK.match(rule.strip())
    if not match:
        raise ConfigError(f"--pick {rule}: expected 'fastest-within P%' (e.g. --pick 'fastest-within 2%')")
    share = float(match.group(1)) / 100
    first = objectives[0]
    front = table[pareto(table, objectives)]
    if front.empty:
        raise ConfigError(f"--pick {rule}: no trial has trained with every objective reported yet")
    best = front[first.metric].min() if first.mode == "min" else front[first.metric].max()
    bound = best + share * abs(best) if first.mode == "min" else best - share * abs(best)
    near = front[front[first.metric] <= bound] if first.mode == "min" else front[front[first.metric] >= bound]
    if speed not in near or near[speed].isna().all():
        raise ConfigError(f"--pick {rule}: the trials have no {speed} to rank by speed")
    return near.sort_values(speed, kind="stable").iloc[0]
