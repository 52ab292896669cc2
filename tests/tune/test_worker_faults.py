"""Faults inside trials: a worker process killed mid-trial, and losses that stop being finite.

Both are injected in the session's Ray workers by tests/tune/_faults.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from optuna.trial import TrialState

from tests.tune.conftest import (
    SearchRun, faults, load_study, ray_statuses, read_results, search_in_process, trials_csv, write_space,
)
from tune._table import load_trials


@pytest.fixture(scope="module")
def killed_worker(ray_session, demo_nc, tmp_path_factory) -> SearchRun:
    """2 trials x 3 epochs; the first worker to start epoch 2 SIGKILLs itself (once)."""
    tmp = tmp_path_factory.mktemp("killed")
    space = write_space(tmp / "space.yaml", {"hidden_channels": {"layers": 1, "widths": [4]}, "batch_size": 8,
                                             "gradient_accumulation_steps": 1})
    with faults(ray_session, die_at_epoch=2, die_marker=str(tmp / "died")):
        code, out = search_in_process([
            "--data", demo_nc, "--space", space, "--num-samples", 2, "--max-epochs", 3, "--grace-epochs", 3,
            "--cpus-per-trial", 1, "--max-failures", 2, "--storage-path", tmp / "runs", "--name", "killed",
        ])
    assert (tmp / "died").is_file(), "no worker was killed"
    return SearchRun(tmp / "runs" / "killed", code, out)


def test_trial_whose_worker_was_killed_is_retried_from_its_checkpoint(killed_worker):
    assert killed_worker.code == 0, killed_worker.out[-3000:]
    restarted = []
    for trial_dir in load_trials(killed_worker.experiment)["trial_dir"]:
        results = read_results(trial_dir)
        restored = [r["epoch"] for r in results if r["iterations_since_restore"] < r["training_iteration"]]
        if restored:
            restarted.append(trial_dir)
            # Epoch 1 is not trained again: it came from the checkpoint. (Its row may be missing from result.json:
            # Ray restores the trial's folder from its last experiment sync, which a checkpoint no longer forces.)
            assert restored == [2, 3], [r["epoch"] for r in results]
    assert len(restarted) == 1


def test_search_with_a_killed_worker_completes_with_every_trial_ok(killed_worker):
    table = trials_csv(killed_worker.experiment)
    assert len(table) == 2 and set(table["status"]) == {"ok"}, table
    assert (table["epochs"] == 3).all()
    assert set(ray_statuses(killed_worker.experiment).values()) == {"TERMINATED"}
    study = load_study(killed_worker.experiment)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2


@pytest.fixture(scope="module")
def nonfinite(ray_session, demo_nc, tmp_path_factory) -> SearchRun:
    """6 trials x 3 epochs over widths 4, 8, 16: width 8 turns NaN and width 16 inf from epoch 2 on."""
    tmp = tmp_path_factory.mktemp("nonfinite")
    space = write_space(tmp / "space.yaml", {"hidden_channels": {"layers": 1, "widths": [4, 8, 16]}, "batch_size": 8,
                                             "gradient_accumulation_steps": 1})
    with faults(ray_session, nan_widths=[8], inf_widths=[16], nonfinite_from_epoch=2):
        code, out = search_in_process([
            "--data", demo_nc, "--space", space, "--num-samples", 6, "--max-epochs", 3, "--grace-epochs", 3,
            "--cpus-per-trial", 1, "--storage-path", tmp / "runs", "--name", "nonfinite", "--seed", 1,
        ])
    return SearchRun(tmp / "runs" / "nonfinite", code, out)


def test_trials_whose_loss_turns_nan_or_inf_are_diverged_after_their_good_epochs(nonfinite):
    assert nonfinite.code == 0, nonfinite.out[-3000:]
    table = trials_csv(nonfinite.experiment)
    assert len(table) == 6
    diverged = table[table["hidden_channels"].isin(["8", "16"])]
    assert set(diverged["hidden_channels"]) == {"8", "16"}, "the seeded space should give both; change --seed"
    assert (diverged["status"] == "diverged").all(), table
    assert (diverged["epochs"] == 1).all() and diverged["val_loss"].isna().all() and diverged["val_rmse"].isna().all()
    ok = table[table["hidden_channels"] == "4"]
    assert len(ok) >= 1 and (ok["status"] == "ok").all()
    assert (diverged["rank"] > ok["rank"].max()).all()
    csv = (nonfinite.experiment / "trials.csv").read_text().lower()
    assert "nan" not in csv and "inf" not in csv


def test_diverged_trials_end_normally_with_one_last_report(nonfinite):
    assert set(ray_statuses(nonfinite.experiment).values()) == {"TERMINATED"}
    for _, row in load_trials(nonfinite.experiment).query("status == 'diverged'").iterrows():
        results = read_results(row["trial_dir"])
        assert [r["status"] for r in results] == ["ok", "diverged"]
        assert math.isinf(results[-1]["val_loss"]) and "not finite" in results[-1]["message"]
        assert not list(Path(row["trial_dir"]).glob("error.*"))


def test_optuna_is_told_no_nan_and_keeps_no_trial_running(nonfinite):
    study = load_study(nonfinite.experiment)
    assert len(study.trials) == 6
    assert not study.get_trials(states=(TrialState.RUNNING,))
    for trial in study.trials:
        values = list(trial.intermediate_values.values()) + ([trial.value] if trial.value is not None else [])
        assert all(math.isfinite(v) for v in values), trial
        if trial.params["width_0"] in (8, 16):
            assert trial.state == TrialState.PRUNED and trial.user_attrs["status"] == "diverged"
            assert trial.constraints and all(c > 0 for c in trial.constraints.values())
        else:
            assert trial.state == TrialState.COMPLETE and trial.user_attrs["status"] == "ok"
    assert json.loads(json.dumps(study.best_trial.params))["width_0"] == 4
