"""--objective val_loss:min,time_per_epoch_s:min: a multi-objective Optuna study, its Pareto set in tune.report,
and tune.retrain --pick choosing from it."""

from __future__ import annotations

import contextlib
import io
import math

import pandas as pd
import pytest
from tune import experiment as ex
from pathlib import Path
from optuna.study import StudyDirection

from data_io import ConfigError
from tests.tune.conftest import OOM_ABOVE_HIDDEN, faults, load_study, search_in_process, write_space
from tune import report, retrain
from tune._table import load_trials


@pytest.fixture(scope="module")
def multi(ray_session, demo_nc, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("multi")
    space = write_space(tmp / "space.yaml", {"hidden_channels": {"layers": 1, "widths": [4, 8, 16, 64]},
                                             "learning_rate": 1e-3})
    with faults(ray_session, oom_above_hidden=OOM_ABOVE_HIDDEN):
        code, out = search_in_process([
            "--data", demo_nc, "--space", space, "--batch-size", 4, "--num-samples", 5, "--max-epochs", 1,
            "--objective", "val_loss:min,time_per_epoch_s:min", "--cpus-per-trial", 1,
            "--storage-path", tmp / "runs", "--name", "multi", "--seed", 3,
        ])
    assert code == 0, out[-3000:]
    return tmp / "runs" / "multi"


def _report(argv) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert report.run([str(a) for a in argv]) == 0
    return out.getvalue()


def test_study_has_two_directions_and_each_trial_both_final_values(multi):
    study = load_study(multi)
    assert study.directions == [StudyDirection.MINIMIZE, StudyDirection.MINIMIZE]
    table = load_trials(multi)
    assert len(study.trials) == len(table) == 5
    ok = table[table["status"] == "ok"]
    # What Optuna was told: each finished trial's final report's values. Compared as sorted pairs, since two trials
    # of the same config (TPE may suggest one twice) tie on val loss and differ only in their times.
    reported = sorted((row["val_loss"], ex.results(Path(row["trial_dir"]))[-1]["time_per_epoch_s"])
                      for _, row in ok.iterrows())
    told = sorted(tuple(t.values) for t in study.trials if t.state.name == "COMPLETE")
    assert len(told) == len(reported) >= 2
    for values, expected in zip(told, reported, strict=True):
        assert list(values) == pytest.approx(list(expected))
    for trial in study.trials:  # OOM trials: infeasible, as in a single-objective search
        if trial.params["width_0"] > OOM_ABOVE_HIDDEN:
            assert trial.state.name == "PRUNED" and trial.user_attrs["status"] == "oom"


def test_report_marks_the_pareto_set_that_optuna_finds(multi):
    table = pd.read_csv(io.StringIO(_report([multi, "--format", "csv"])), dtype={"trial_id": str})
    assert "pareto" in table
    front = table[table["pareto"]]
    optuna_front = {round(t.values[0], 6) for t in load_study(multi).best_trials}
    assert {round(v, 6) for v in front["val_loss"]} == optuna_front
    filtered = pd.read_csv(io.StringIO(_report([multi, "--pareto", "--format", "csv"])), dtype={"trial_id": str})
    assert sorted(filtered["trial_id"]) == sorted(front["trial_id"])
    assert not (table["status"] == "oom").loc[table["pareto"]].any()


def test_retrain_pick_fastest_within_chooses_from_the_pareto_set(multi):
    table = load_trials(multi)
    ok = table[table["status"] == "ok"]
    best = ok["val_loss"].min()
    near = ok[ok["val_loss"] <= best * 1.02]
    want = near.sort_values("time_per_epoch_s").iloc[0]["trial_id"]
    assert retrain.picked_trial(multi, "fastest-within 2%") == want
    far = retrain.picked_trial(multi, "fastest-within 1000%")
    assert far == ok.sort_values("time_per_epoch_s").iloc[0]["trial_id"]
    config, source = retrain.chosen_config(multi, want)
    assert source.startswith(f"trial {want} of multi") and math.isfinite(best)


def test_retrain_refuses_pick_with_trial(multi):
    with pytest.raises(ConfigError, match="--pick and --trial"):
        retrain.run([str(multi), "--pick", "fastest-within 2%", "--trial", "x"])
