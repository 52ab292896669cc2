"""OOM rescue: a trial out of memory at batch b x k runs once more at b/2 x 2k before it is recorded `oom`.

The session's Ray workers carry tests/tune/_faults.py: "oom_above_batch" makes every forward of more than that many
samples raise torch.OutOfMemoryError, so batch 4 runs out of memory and batch 2 fits, as on a card that is too small.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.tune.conftest import faults, load_study, read_results, search_in_process, trials_csv, write_space
from tune._table import load_trials
from tune.experiment import Experiment

CURVE = ("train_loss", "val_loss", "val_rmse")


def _search(ray_session, demo_nc, tmp: Path, name: str, batch: int, accumulation: int, **injected) -> Path:
    space = write_space(tmp / "space.yaml", {"learning_rate": 1e-3})
    with faults(ray_session, **injected):
        code, out = search_in_process([
            "--data", demo_nc, "--space", space, "--hidden-channels", 8, "--batch-size", batch,
            "--gradient-accumulation-steps", accumulation, "--num-samples", 1, "--max-epochs", 2, "--grace-epochs", 2,
            "--cpus-per-trial", 1, "--storage-path", tmp / "runs", "--name", name, "--seed", 1,
        ])
    assert code == 0, out[-3000:]
    return tmp / "runs" / name


def _curve(experiment: Path) -> list[dict]:
    (trial_dir,) = load_trials(experiment)["trial_dir"]
    return [{k: r[k] for k in CURVE if k in r} for r in read_results(trial_dir)]


def _direct(experiment: Path, out: Path, batch: int, accumulation: int) -> list[dict]:
    """The experiment's one trial config at batch x accumulation, trained by the trainer itself (no Ray, no
    rescue): the reference a rescued trial's curve must equal."""
    from data_io import prepare
    from model.trainer import fit

    (trial_dir,) = load_trials(experiment)["trial_dir"]
    config = Experiment(experiment).trial_config(Path(trial_dir))
    config.train.batch_size, config.train.gradient_accumulation_steps = batch, accumulation
    config.train.output_dir, config.train.device = str(out), "cpu"
    return [{k: getattr(r, k) for k in CURVE} for r in fit(config, prepare(config.data))]


@pytest.fixture(scope="module")
def rescued(ray_session, demo_nc, tmp_path_factory) -> Path:
    return _search(ray_session, demo_nc, tmp_path_factory.mktemp("rescued"), "rescued", 4, 1, oom_above_batch=2)


def test_rescued_trial_trains_at_half_the_batch_and_the_table_says_so(rescued):
    table = trials_csv(rescued)
    assert list(table["status"]) == ["ok"]
    row = table.iloc[0]
    assert (row["batch_size"], row["accumulation"], row["effective_batch"], row["rescued_batch"]) == (4, 1, 4, 2)
    assert row["epochs"] == 2 and math.isfinite(row["val_loss"])
    (trial_dir,) = load_trials(rescued)["trial_dir"]
    saved = json.loads((Path(trial_dir) / "rescue.json").read_text())
    assert (saved["from_batch"], saved["rescued_batch"], saved["rescued_accumulation"]) == (4, 2, 2)
    assert "injected by tests: batch 4 > 2" in saved["oom"]


def test_optuna_keeps_the_suggested_params_and_records_the_rescue(rescued):
    (trial,) = load_study(rescued).trials
    assert trial.state.name == "COMPLETE"
    assert trial.user_attrs["rescued_batch"] == 2 and trial.user_attrs["status"] == "ok"
    assert not trial.constraints


def test_rescued_loss_curve_equals_a_direct_half_batch_double_accumulation_run(rescued, tmp_path):
    got, want = _curve(rescued), _direct(rescued, tmp_path, 2, 2)
    assert len(got) == 2 and got == want


@pytest.fixture(scope="module")
def whole(rescued, tmp_path_factory) -> list[dict]:
    """The same trial's curve at batch 4 x 1 with nothing injected."""
    return _direct(rescued, tmp_path_factory.mktemp("whole"), 4, 1)


def _assert_same_curve(got: list[dict], want: list[dict]) -> None:
    for g, w in zip(got, want, strict=True):
        assert g.keys() == w.keys()
        for key in g:
            assert g[key] == pytest.approx(w[key], rel=1e-4), key


def test_rescued_curve_matches_the_unrescued_batch_it_replaces(rescued, whole):
    """Same windows in each optimizer step, loss scaled per step: the b x k run trains the same, up to rounding."""
    _assert_same_curve(_curve(rescued), whole)


def test_a_trial_out_of_memory_after_its_first_epoch_goes_on_from_its_checkpoint(ray_session, demo_nc, whole,
                                                                                 tmp_path_factory):
    """An OOM after a report (on CUDA: a trial with fewer than three micro-batches an epoch captures its graph in
    its second epoch): the reported epoch stands, and the trial goes on from its checkpoint at b/2 x 2k."""
    late = _search(ray_session, demo_nc, tmp_path_factory.mktemp("late"), "late", 4, 1, oom_above_batch=2,
                   oom_from_epoch=2)
    row = trials_csv(late).iloc[0]
    assert (row["status"], row["rescued_batch"], row["epochs"]) == ("ok", 2, 2)
    (trial_dir,) = load_trials(late)["trial_dir"]
    assert [r["epoch"] for r in read_results(trial_dir)] == [1, 2], "epoch 1 is neither run nor reported again"
    assert "injected by tests: batch 4 > 2" in json.loads((Path(trial_dir) / "rescue.json").read_text())["oom"]
    got, want = _curve(late), whole
    assert got[0] == want[0], "epoch 1 ran at batch 4, as the whole run's"
    _assert_same_curve(got, want)


def test_a_trial_that_runs_out_of_memory_again_is_oom_after_one_rescue(ray_session, demo_nc, tmp_path_factory):
    experiment = _search(ray_session, demo_nc, tmp_path_factory.mktemp("again"), "again", 4, 1, oom_above_batch=1)
    row = trials_csv(experiment).iloc[0]
    assert row["status"] == "oom" and row["rescued_batch"] == 2 and row["epochs"] == 0
    (trial_dir,) = load_trials(experiment)["trial_dir"]
    (last,) = read_results(trial_dir)  # one report: the rescue happens inside the trial
    assert "batch 2 > 1" in last["message"] and "after the rescue at batch 2" in last["message"]
    (trial,) = load_study(experiment).trials
    assert trial.state.name == "PRUNED" and trial.user_attrs["status"] == "oom"
