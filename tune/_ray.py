"""The few Ray Tune and Optuna internals (private attributes) the search relies on, in one place.

Each has a test in tests/tune/test_ray_internals.py named after it, so a Ray or Optuna upgrade that changes one fails
that test, naming what changed, rather than a search somewhere in the middle.
"""

from __future__ import annotations

from typing import Any

import optuna


# ---- ray.tune.search.optuna.OptunaSearch --------------------------------------------------------------------------
def optuna_trial(searcher: Any, trial_id: str) -> optuna.Trial | None:
    """The Optuna trial OptunaSearch asked for this Tune trial (None when it did not ask for it)."""
    return searcher._ot_trials.get(trial_id)


def forget_asked(searcher: Any, trial_id: str) -> None:
    """Drop the Optuna trial OptunaSearch asked for this Tune trial, so that its next suggest() asks a new one."""
    searcher._ot_trials.pop(trial_id, None)


def already_told(searcher: Any, trial_id: str) -> bool:
    """Whether OptunaSearch has told Optuna how this trial ended."""
    return trial_id in searcher._completed_trials


def mark_told(searcher: Any, trial_id: str) -> None:
    searcher._completed_trials.add(trial_id)


def study(searcher: Any) -> optuna.Study:
    """The study OptunaSearch asks and tells."""
    return searcher._ot_study


# ---- ray.tune.schedulers.ASHAScheduler ----------------------------------------------------------------------------
def forget_trial(asha: Any, trial_id: str) -> None:
    """Take a trial out of ASHA's rungs (its recorded results), as if it had never reported."""
    asha._trial_info.pop(trial_id, None)


# ---- optuna ------------------------------------------------------------------------------------------------------
def storage_id(trial: optuna.trial.FrozenTrial) -> int:
    """The trial's id in the storage, which the storage's setters take (FrozenTrial.number is per study)."""
    return trial._trial_id
