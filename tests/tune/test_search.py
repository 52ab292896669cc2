"""python -m tune.search end to end on demo data, and its command line."""

from __future__ import annotations

import pytest
import yaml
from optuna.trial import TrialState

from tests.tune.conftest import (
    ISSUE_COLUMNS, OOM_SPACE, SearchRun, load_study, read_results, restored_logging, search_in_process, trials_csv,
    write_space,
)
from tune._table import load_trials
from tune.search import main

NUM_SAMPLES = 5


@pytest.fixture(scope="module")
def e2e(ray_session, demo_nc, tmp_path_factory) -> SearchRun:
    """The default space, 5 trials x 2 epochs, ASHA after the first epoch."""
    tmp = tmp_path_factory.mktemp("e2e")
    code, out = search_in_process([
        "--data", demo_nc, "--num-samples", NUM_SAMPLES, "--max-epochs", 2, "--cpus-per-trial", 1,
        "--storage-path", tmp / "runs", "--name", "e2e", "--seed", 0,
    ])
    return SearchRun(tmp / "runs" / "e2e", code, out)


def test_search_exits_0_and_writes_its_results(e2e):
    assert e2e.code == 0, e2e.out[-3000:]
    for name in ("trials.csv", "best_config.yaml", "optuna.db", "search.yaml", "search.log"):
        assert (e2e.experiment / name).is_file(), name


def test_trials_csv_has_every_trial_with_the_issue_columns(e2e):
    table = trials_csv(e2e.experiment)
    assert list(table.columns) == list(ISSUE_COLUMNS.values())
    assert len(table) == NUM_SAMPLES
    assert table["rank"].tolist() == list(range(1, NUM_SAMPLES + 1))
    assert table["trial_id"].is_unique
    assert set(table["trial_id"]) == {d.name.split("_")[2] for d in e2e.experiment.glob("train_trial_*")}
    assert (table["device"] == "cpu").all()
    assert (table["effective_batch"] == table["batch_size"] * table["accumulation"]).all()
    finished = table[table["val_loss"].notna()]
    assert finished["val_loss"].is_monotonic_increasing  # ranked by val loss


def test_printed_table_shows_every_trial(e2e):
    table = trials_csv(e2e.experiment)
    header = next(line for line in e2e.out.splitlines() if line.split()[:2] == ["rank", "trial_id"])
    assert header.split() == list(ISSUE_COLUMNS.values())
    for trial_id in table["trial_id"]:
        assert trial_id in e2e.out


def test_trials_finish_ok_or_stopped_early_after_at_least_one_epoch(e2e):
    table = trials_csv(e2e.experiment)
    assert set(table["status"]) <= {"ok", "stopped early"}, table[["trial_id", "status"]]
    assert (table[table["status"] == "ok"]["epochs"] == 2).all()
    assert (table["epochs"] >= 1).all()
    assert table[["val_loss", "val_rmse", "time_per_epoch_s", "peak_memory_mb"]].notna().all().all()


def test_asha_stopped_trials_are_pruned_in_optuna_not_complete(e2e):
    table = load_trials(e2e.experiment)
    stopped = table[table["status"] == "stopped early"]
    assert len(stopped) >= 1, "ASHA stopped no trial: the check below would be empty"
    study = load_study(e2e.experiment)
    # Optuna does not know Ray's trial ids: match the trials by their first epoch's val loss.
    first_val = {t.intermediate_values[1]: t for t in study.trials if 1 in t.intermediate_values}
    for _, row in table.iterrows():
        optuna_trial = first_val[read_results(row["trial_dir"])[0]["val_loss"]]
        expected = TrialState.PRUNED if row["status"] == "stopped early" else TrialState.COMPLETE
        assert optuna_trial.state == expected, (row["trial_id"], row["status"], optuna_trial)
        assert optuna_trial.user_attrs["status"] == row["status"]


def test_optuna_study_has_every_trial_and_none_running(e2e):
    study = load_study(e2e.experiment)
    assert len(study.trials) == NUM_SAMPLES
    assert not study.get_trials(states=(TrialState.RUNNING,))
    assert study.study_name.startswith("e2e-")


def test_best_config_is_the_best_trial_and_train_convlstm_accepts_it(e2e, run_script, tmp_path):
    best = trials_csv(e2e.experiment).iloc[0]
    config = yaml.safe_load((e2e.experiment / "best_config.yaml").read_text())
    assert " ".join(map(str, config["model"]["hidden_channels"])) == str(best["hidden_channels"])
    assert config["train"]["batch_size"] == best["batch_size"]
    assert config["train"]["learning_rate"] == pytest.approx(best["learning_rate"])
    proc = run_script(
        "--config", e2e.experiment / "best_config.yaml", "--num-epochs", 1, "--output-dir", tmp_path / "train",
        "--num-workers", 0,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "train" / "last.pt").is_file()


# ---- searched keys given as flags, --space narrowing (on the OOM search's run: one search, two checks) -----


def test_searched_key_given_as_flag_is_fixed_for_all_trials(oom_search):
    table = trials_csv(oom_search.experiment)
    assert (table["batch_size"] == 4).all()
    space = yaml.safe_load((oom_search.experiment / "search.yaml").read_text())["space"]
    assert "batch_size" not in space


def test_space_yaml_narrows_the_searched_values(oom_search):
    table = trials_csv(oom_search.experiment)
    assert set(table["hidden_channels"]) <= {"8", "64"}
    assert set(table["accumulation"]) <= set(OOM_SPACE["gradient_accumulation_steps"])
    assert table["learning_rate"].tolist() == pytest.approx([OOM_SPACE["learning_rate"]] * len(table))


# ---- errors: one line, exit 2, nothing written --------------------------------------------------------------


def _exit_code_and_stderr(argv: list, capsys) -> tuple[int, str]:
    with restored_logging(), pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    return exit_info.value.code, capsys.readouterr().err


@pytest.mark.parametrize(
    "space, message",
    [
        ({"hidden_size": [8]}, "unknown key(s) ['hidden_size']"),
        ({"hidden_channels": {"widths": []}}, "hidden_channels.widths must be a non-empty list"),
        ({"batch_size": []}, "batch_size must be a non-empty list"),
    ],
    ids=["unknown-key", "empty-widths", "empty-batch-sizes"],
)
def test_bad_space_file_exits_2_with_one_line(space, message, demo_nc, tmp_path, capsys):
    path = write_space(tmp_path / "space.yaml", space)
    code, err = _exit_code_and_stderr(
        ["--data", demo_nc, "--space", path, "--storage-path", tmp_path / "runs", "--name", "bad"], capsys
    )
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("python -m tune.search: error: --space ") and message in err, err
    assert not (tmp_path / "runs" / "bad").exists()


def test_resume_of_a_folder_that_is_not_an_experiment_exits_2_with_one_line(demo_nc, tmp_path, capsys):
    (tmp_path / "runs" / "other").mkdir(parents=True)
    code, err = _exit_code_and_stderr(
        ["--data", demo_nc, "--resume", "--storage-path", tmp_path / "runs", "--name", "other"], capsys
    )
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert "--resume" in err and "is not a search experiment" in err, err
    assert list((tmp_path / "runs" / "other").iterdir()) == []
