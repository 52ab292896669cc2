"""A trial that hits a real bug (not OOM, not divergence) stays ERROR, keeps its traceback, and has a row."""

from __future__ import annotations

from pathlib import Path

import pytest
from optuna.trial import TrialState

from tests.tune.conftest import (
    SearchRun, faults, load_study, ray_statuses, read_results, search_in_process, trials_csv, write_space,
)
from tune._table import load_trials

BUG_ABOVE_HIDDEN = 32


@pytest.fixture(scope="module")
def buggy_search(ray_session, demo_nc, tmp_path_factory) -> SearchRun:
    """4 trials over widths 8 and 64; the 64-wide model raises a ValueError in its first forward; no retries."""
    tmp = tmp_path_factory.mktemp("bug")
    space = write_space(tmp / "space.yaml", {"hidden_channels": {"layers": 1, "widths": [8, 64]}, "batch_size": 4})
    with faults(ray_session, bug_above_hidden=BUG_ABOVE_HIDDEN):
        code, out = search_in_process([
            "--data", demo_nc, "--space", space, "--num-samples", 4, "--max-epochs", 2, "--cpus-per-trial", 1,
            "--max-failures", 0, "--storage-path", tmp / "runs", "--name", "bug", "--seed", 3,
        ])
    return SearchRun(tmp / "runs" / "bug", code, out)


def test_trial_with_a_bug_is_error_in_ray_with_its_traceback(buggy_search):
    assert buggy_search.code == 0, buggy_search.out[-3000:]
    table = load_trials(buggy_search.experiment)
    errored = table[table["status"] == "error"]
    assert len(errored) >= 1 and (errored["hidden_channels"] == "64").all(), table
    statuses = ray_statuses(buggy_search.experiment)
    for _, row in errored.iterrows():
        assert statuses[row["trial_id"]] == "ERROR"
        assert read_results(row["trial_dir"]) == []  # it never reported
        error = (Path(row["trial_dir"]) / "error.txt").read_text()
        assert "_faults.py" in error and "ValueError: a bug in the model" in error  # the stack, not only the message


def test_trial_that_never_reported_still_has_a_row_with_its_id_and_params(buggy_search):
    table = trials_csv(buggy_search.experiment)
    assert len(table) == 4
    assert set(table["trial_id"]) == set(ray_statuses(buggy_search.experiment))
    errored = table[table["status"] == "error"]
    assert (errored["batch_size"] == 4).all() and errored["learning_rate"].notna().all()
    assert errored["val_loss"].isna().all() and (errored["epochs"] == 0).all()
    assert set(table[table["hidden_channels"] == "8"]["status"]) <= {"ok", "stopped early"}


def test_optuna_has_the_errored_trial_as_fail_and_none_running(buggy_search):
    study = load_study(buggy_search.experiment)
    assert len(study.trials) == 4
    assert not study.get_trials(states=(TrialState.RUNNING,))
    for trial in study.trials:
        if trial.params["width_0"] > BUG_ABOVE_HIDDEN:
            assert trial.state == TrialState.FAIL and trial.user_attrs["status"] == "error", trial
