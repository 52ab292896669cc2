"""OptunaSearch, told the truth about how each trial ended.

Ray's OptunaSearch tells every trial that reported a value as COMPLETE, FAIL otherwise. Two of our outcomes
need more care:
- Out of memory / diverged: TPE ignores FAIL, so it would keep proposing configs that cannot fit. We tell
  PRUNED with a positive constraint ("infeasible"); TPE ranks infeasible trials below every feasible one,
  so it learns to avoid that region. Never NaN: a NaN value leaves the Optuna trial RUNNING forever.
- Stopped by ASHA: its last val loss is a truncated value, not a final one. We tell PRUNED; TPE ranks
  pruned trials after all complete ones, by how many epochs they reached and their value at that step
  (OptunaSearch has already reported every epoch's val loss as an intermediate value).
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path

import optuna
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from data_io import ConfigError
from tune import _preflight, _ray
from tune import experiment as ex
from tune.outcome import Outcome

log = logging.getLogger(__name__)


class OutcomeAwareOptunaSearch(OptunaSearch):
    """With a list of metrics (a multi-objective study) Optuna gets each trial's final values only: it cannot take
    intermediate values (nor prune) in a multi-objective study.

    A suggested config that is not a valid config (e.g. a U-Net with one level, where the space searches the model
    type and the layer count apart) is told to Optuna as infeasible (user attr status "invalid", with the reason)
    without launching. With a memory pre-flight (tune/_preflight.py), one predicted not to fit its budget is told
    the same way (status "skipped"). Either way Optuna is asked again for the same Tune trial, up to MAX_SKIPS
    times in a row.
    """

    MAX_SKIPS = 50

    def __init__(self, *args, base: dict | None = None, preflight=None, experiment: Path | None = None,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.base, self.preflight, self.experiment = base, preflight, experiment

    def suggest(self, trial_id: str) -> dict | None:
        for _ in range(self.MAX_SKIPS):
            params = super().suggest(trial_id)
            if params is None:
                return params
            problem = self._invalid(params)
            if problem is None and self.preflight is None:
                return params
            ot_trial = _ray.optuna_trial(self, trial_id)
            if problem is not None:
                log.info("Not launched (Optuna trial %d), not a valid config: %s: %s", ot_trial.number, params,
                         problem)
                ot_trial.set_user_attr("status", "invalid")
                ot_trial.set_user_attr("reason", problem)
            else:
                verdict = self.preflight.check(params)
                _preflight.record(self.experiment, trial_id, ot_trial.number, params, verdict)
                if verdict.fits:
                    return params
                ot_trial.set_user_attr("status", Outcome.SKIPPED.value)
                ot_trial.set_user_attr("predicted_mb", round(verdict.predicted_mb, 1))
                ot_trial.set_user_attr("available_mb", round(verdict.available_mb, 1))
            ot_trial.set_constraint("fits_and_converges", 1.0)
            _ray.study(self).tell(ot_trial, state=optuna.trial.TrialState.PRUNED)
            _ray.forget_asked(self, trial_id)
        log.error("%d configs in a row were not valid or predicted not to fit: narrow --space (the log above says "
                  "why each was left out), or give more memory (--gpus-per-trial)", self.MAX_SKIPS)
        return Searcher.FINISHED

    def _invalid(self, params: dict) -> str | None:
        """Why these params make no valid config, or None."""
        if self.base is None:
            return None
        try:
            ex.trial_config(self.base, params)
        except ConfigError as exc:
            return str(exc)
        return None

    @property
    def multi(self) -> bool:
        return isinstance(self.metric, list)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if self.multi:
            return
        value = result.get(self.metric)
        if isinstance(value, (int, float)) and math.isfinite(value) and _ray.optuna_trial(self, trial_id):
            try:
                super().on_trial_result(trial_id, result)
            except optuna.exceptions.UpdateFinishedTrialError as exc:  # e.g. closed by a search that crashed
                log.warning("could not report trial %s's result to Optuna: %s", trial_id, exc)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        ot_trial = _ray.optuna_trial(self, trial_id)
        if ot_trial is None or _ray.already_told(self, trial_id):
            return
        study = _ray.study(self)
        status = (result or {}).get("status")
        values = [(result or {}).get(m) for m in (self.metric if self.multi else [self.metric])]
        finite = all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)
        value = values if self.multi else values[0]
        try:
            if (result or {}).get("rescued_batch"):  # the params stay the suggested ones; this says how it ran
                ot_trial.set_user_attr("rescued_batch", int(result["rescued_batch"]))
            step = (result or {}).get("training_iteration")
            if finite and step is not None and not self.multi:
                with warnings.catch_warnings():  # Optuna warns when this step was already reported
                    warnings.simplefilter("ignore")
                    ot_trial.report(float(value), step)  # Ray hands the last result here, not to on_trial_result
            if status in (Outcome.OOM, Outcome.DIVERGED):
                ot_trial.set_user_attr("status", Outcome(status).value)
                ot_trial.set_constraint("fits_and_converges", 1.0)
                study.tell(ot_trial, state=optuna.trial.TrialState.PRUNED)
            elif error or not finite:
                ot_trial.set_user_attr("status", Outcome.ERROR.value)
                study.tell(ot_trial, state=optuna.trial.TrialState.FAIL)
            elif not result.get("trial_finished", False):
                ot_trial.set_user_attr("status", Outcome.STOPPED_EARLY.value)
                study.tell(ot_trial, state=optuna.trial.TrialState.PRUNED)
            else:
                ot_trial.set_user_attr("status", Outcome.OK.value)
                told = [float(v) for v in values] if self.multi else float(value)
                study.tell(ot_trial, told, state=optuna.trial.TrialState.COMPLETE)
        except (RuntimeError, ValueError) as exc:  # e.g. already told before a driver restart
            log.warning("could not tell Optuna about trial %s: %s", trial_id, exc)
        _ray.mark_told(self, trial_id)


def close_running_trials(storage: optuna.storages.BaseStorage, study_name: str) -> int:
    """Trials Optuna still has RUNNING after the search (asked before a driver crash, never run) become FAIL."""
    study = optuna.load_study(study_name=study_name, storage=storage)
    closed = 0
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        storage.set_trial_system_attr(_ray.storage_id(trial), "closed_by", "search end: never ran to completion")
        storage.set_trial_state_values(_ray.storage_id(trial), optuna.trial.TrialState.FAIL)
        closed += 1
    return closed
