"""Trials that run out of memory: a real torch.OutOfMemoryError raised by the model's forward in the Ray worker.

The session's Ray workers carry tests/tune/_faults.py; the oom_search fixture makes every model wider than
OOM_ABOVE_HIDDEN channels fail in its first forward, as CUDA does when a config does not fit.
"""

from __future__ import annotations

import math
from pathlib import Path

from optuna.trial import TrialState

from tests.tune.conftest import (
    OOM_ABOVE_HIDDEN, load_study, ray_statuses, read_results, search_in_process, trials_csv,
)
from tune._table import load_trials


def _results_by_trial(experiment: Path) -> dict[str, str]:
    return {d: (Path(d) / "result.json").read_text() for d in load_trials(experiment)["trial_dir"]}


def _widths(hidden: str) -> int:
    return sum(int(w) for w in str(hidden).split())


def test_search_with_oom_trials_exits_0_and_has_both_kinds(oom_search):
    assert oom_search.code == 0, oom_search.out[-3000:]
    table = trials_csv(oom_search.experiment)
    assert len(table) == 5
    too_big = table["hidden_channels"].map(_widths) > OOM_ABOVE_HIDDEN
    assert too_big.any() and (~too_big).any(), "the seeded space should give both sides; change --seed"


def test_configs_above_the_size_are_oom_in_the_table_with_peak_memory(oom_search):
    table = trials_csv(oom_search.experiment)
    oom = table[table["hidden_channels"].map(_widths) > OOM_ABOVE_HIDDEN]
    assert (oom["status"] == "oom").all(), oom
    assert (oom["epochs"] == 0).all()
    assert (oom["peak_memory_mb"] > 0).all()
    assert oom["val_loss"].isna().all() and oom["val_rmse"].isna().all()
    assert (oom["rank"] > table[table["status"] != "oom"]["rank"].max()).all()  # failures rank last


def test_configs_under_the_size_train(oom_search):
    table = trials_csv(oom_search.experiment)
    fits = table[table["hidden_channels"].map(_widths) <= OOM_ABOVE_HIDDEN]
    assert set(fits["status"]) <= {"ok", "stopped early"}, fits
    assert (fits["epochs"] >= 1).all() and fits["val_loss"].notna().all()


def test_oom_trials_end_normally_terminated_not_error_in_ray(oom_search):
    statuses = ray_statuses(oom_search.experiment)
    table = trials_csv(oom_search.experiment)
    assert set(statuses) == set(table["trial_id"])
    assert set(statuses.values()) == {"TERMINATED"}, statuses
    for trial_dir in load_trials(oom_search.experiment)["trial_dir"]:
        assert not list(Path(trial_dir).glob("error.*")), trial_dir


def test_oom_trials_report_once_with_the_error_and_are_not_retried(oom_search):
    for _, row in load_trials(oom_search.experiment).query("status == 'oom'").iterrows():
        results = read_results(row["trial_dir"])
        assert len(results) == 1, results  # one attempt, one report
        assert results[0]["status"] == "oom" and results[0]["trial_finished"]
        assert "injected by tests" in results[0]["message"]
        assert math.isinf(results[0]["val_loss"])


def test_optuna_has_oom_trials_pruned_with_a_positive_constraint_and_none_running(oom_search):
    study = load_study(oom_search.experiment)
    table = trials_csv(oom_search.experiment)
    assert len(study.trials) == len(table)
    assert not study.get_trials(states=(TrialState.RUNNING,))
    for trial in study.trials:
        if trial.params["width_0"] > OOM_ABOVE_HIDDEN:
            assert trial.user_attrs["status"] == "oom"
            assert trial.state == TrialState.PRUNED, trial
            assert trial.constraints and all(c > 0 for c in trial.constraints.values()), trial.system_attrs
        else:
            assert trial.state in (TrialState.COMPLETE, TrialState.PRUNED), trial
            assert trial.user_attrs["status"] in ("ok", "stopped early")
            assert not trial.constraints
    assert sum(t.user_attrs["status"] == "oom" for t in study.trials) == (table["status"] == "oom").sum()


def test_resuming_a_finished_search_reruns_no_trial_not_even_oom(oom_search):
    before = _results_by_trial(oom_search.experiment)
    study_before = [(t.number, t.state) for t in load_study(oom_search.experiment).trials]
    code, out = search_in_process(["--resume", "--storage-path", oom_search.experiment.parent, "--name", "oom"])
    assert code == 0, out[-3000:]
    assert _results_by_trial(oom_search.experiment) == before
    assert [(t.number, t.state) for t in load_study(oom_search.experiment).trials] == study_before
