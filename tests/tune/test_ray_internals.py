"""One test per Ray / Optuna internal that tune/_ray.py wraps: an upgrade that changes one fails the test named
after it. Real objects, no Ray cluster needed."""

from __future__ import annotations

import optuna
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from tune import _ray


def _searcher() -> OptunaSearch:
    searcher = OptunaSearch(space={"x": tune.uniform(0, 1)}, metric="val_loss", mode="min",
                            sampler=optuna.samplers.RandomSampler(seed=0))
    searcher.set_search_properties("val_loss", "min", config={})
    return searcher


def test_optuna_search_keeps_its_optuna_trial_per_tune_trial_in__ot_trials():
    searcher = _searcher()
    suggested = searcher.suggest("t1")
    trial = _ray.optuna_trial(searcher, "t1")
    assert isinstance(trial, optuna.Trial) and trial.params["x"] == suggested["x"]
    assert _ray.optuna_trial(searcher, "never-asked") is None


def test_optuna_search_asks_a_new_optuna_trial_once_forgotten_from__ot_trials():
    searcher = _searcher()
    searcher.suggest("t1")
    first = _ray.optuna_trial(searcher, "t1")
    _ray.study(searcher).tell(first, state=optuna.trial.TrialState.PRUNED)
    _ray.forget_asked(searcher, "t1")
    assert _ray.optuna_trial(searcher, "t1") is None
    searcher.suggest("t1")
    assert _ray.optuna_trial(searcher, "t1").number == first.number + 1


def test_optuna_search_records_told_trials_in__completed_trials():
    searcher = _searcher()
    searcher.suggest("t1")
    assert not _ray.already_told(searcher, "t1")
    searcher.on_trial_complete("t1", {"val_loss": 0.5, "training_iteration": 1})
    assert _ray.already_told(searcher, "t1")
    searcher.suggest("t2")
    _ray.mark_told(searcher, "t2")
    assert _ray.already_told(searcher, "t2")


def test_optuna_search_asks_and_tells_one_study_in__ot_study():
    searcher = _searcher()
    searcher.suggest("t1")
    searcher.on_trial_complete("t1", {"val_loss": 0.5, "training_iteration": 1})
    study = _ray.study(searcher)
    assert isinstance(study, optuna.Study)
    assert [t.value for t in study.get_trials(states=[optuna.trial.TrialState.COMPLETE])] == [0.5]


def test_asha_keeps_each_trials_results_in__trial_info():
    asha = ASHAScheduler(time_attr="training_iteration", metric="val_loss", mode="min", max_t=4, grace_period=1)
    assert isinstance(asha._trial_info, dict)
    asha._trial_info["t1"] = object()
    _ray.forget_trial(asha, "t1")
    _ray.forget_trial(asha, "not-there")
    assert "t1" not in asha._trial_info


def test_optuna_frozen_trial_has_its_storage_id_in__trial_id(tmp_path):
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'o.db'}")
    study = optuna.create_study(storage=storage)
    study.ask()
    (frozen,) = study.get_trials(deepcopy=False)
    storage.set_trial_state_values(_ray.storage_id(frozen), optuna.trial.TrialState.FAIL)
    assert study.get_trials()[0].state == optuna.trial.TrialState.FAIL


def test_trial_set_constraint_exists_for_infeasible_outcomes():
    """tune/_searcher.py marks OOM / diverged trials infeasible with Trial.set_constraint (Optuna >= 5.0)."""
    study = optuna.create_study()
    trial = study.ask()
    trial.set_constraint("fits_and_converges", 1.0)
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
