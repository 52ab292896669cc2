"""The experiment folder model (tune/experiment.py) and the outcome enum, on folders written by hand: no Ray."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import yaml

from model.config import Config
from tune import experiment as ex
from tune._table import load_trials
from tune.outcome import FITTED, INFEASIBLE, Outcome
from tune.report import STATUSES
from tune.report import run as report
from tune.retrain import chosen_config


class _CreatesFile:
    """Unpickling this creates the file: the test sees whether anything loaded a pickle."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def _experiment(tmp_path: Path, trials: dict[str, tuple[dict, list[dict]]], space: dict | None = None) -> Path:
    exp = tmp_path / "x"
    ex.Experiment(exp).write_search(Config().to_dict(), space or {"kernel_size": {"values": [3, 5]}}, {})
    for i, (trial_id, (params, results)) in enumerate(trials.items()):
        d = exp / f"train_trial_{trial_id}_{i:05d}_2026-01-01"
        d.mkdir()
        (d / ex.PARAMS_JSON).write_text(json.dumps(params))
        (d / ex.RESULT_JSON).write_text("".join(json.dumps({"trial_id": trial_id, **r}) + "\n" for r in results))
    return exp


def _ok(val: float, finished: bool = True) -> dict:
    return {"status": "ok", "val_loss": val, "epoch": 1, "trial_finished": finished, "timestamp": 1}


def test_best_trial_is_the_lowest_val_loss_among_fitted_trials(tmp_path):
    exp = _experiment(tmp_path, {
        "aaaaaaaa": ({"kernel_size": 3}, [_ok(0.5)]),
        "bbbbbbbb": ({"kernel_size": 5}, [_ok(0.3, finished=False)]),
        "cccccccc": ({"kernel_size": 5}, [{"status": "oom", "val_loss": float("inf"), "trial_finished": True}]),
    })
    table = load_trials(exp)
    assert dict(zip(table["trial_id"], table["status"])) == {
        "aaaaaaaa": "ok", "bbbbbbbb": "stopped early", "cccccccc": "oom"}
    best = ex.best_trial(table)
    assert best["trial_id"] == "bbbbbbbb"
    assert ex.Experiment(exp).trial_config(Path(best["trial_dir"])).model.kernel_size == 5


def test_table_has_a_column_for_every_searched_field(tmp_path):
    exp = _experiment(tmp_path, {"aaaaaaaa": ({"kernel_size": 5, "window_size": 4}, [_ok(0.5)])},
                      space={"kernel_size": {"values": [3, 5]}, "window_size": {"values": [4, 8]}})
    row = load_trials(exp).iloc[0]
    assert (row["kernel_size"], row["window_size"]) == (5, 4)


def test_no_best_trial_before_one_has_a_val_loss(tmp_path):
    exp = _experiment(tmp_path, {"aaaaaaaa": ({"kernel_size": 3}, [])})
    assert load_trials(exp)["status"].tolist() == ["pending"]
    assert ex.best_trial(load_trials(exp)) is None


def test_outcome_values_are_the_words_users_see():
    assert [o.value for o in Outcome] == ["ok", "stopped early", "oom", "diverged", "error", "skipped", "pending"]
    assert STATUSES == ("ok", "stopped-early", "oom", "diverged", "error", "skipped", "pending")
    assert Outcome.parse("stopped_early") is Outcome.STOPPED_EARLY and Outcome.OOM == "oom"
    assert INFEASIBLE == {Outcome.OOM, Outcome.DIVERGED, Outcome.SKIPPED}
    assert FITTED == {Outcome.OK, Outcome.STOPPED_EARLY}
    with pytest.raises(ValueError):
        Outcome.parse("finished")


def test_report_and_retrain_never_load_the_folders_pickles(tmp_path, capsys):
    exp = _experiment(tmp_path, {"aaaaaaaa": ({"kernel_size": 3}, [_ok(0.5)])})
    marker = tmp_path / "pickle-was-loaded"
    payload = pickle.dumps(_CreatesFile(marker))
    trial_dir = ex.Experiment(exp).trial_dirs()[0]
    for path in (exp / "tuner.pkl", exp / "searcher-state-2026.pkl", trial_dir / ex.ERROR_PKL):
        path.write_bytes(payload)
    assert report([str(exp), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["status"] == "error"  # error.pkl: the trial failed
    config, source = chosen_config(exp, "aaaaaaaa")
    assert config["model"]["kernel_size"] == 3 and "trial aaaaaaaa" in source
    assert not marker.exists()


def test_damaged_search_yaml_is_one_line_naming_the_file(tmp_path):
    exp = _experiment(tmp_path, {})
    (exp / ex.SEARCH_YAML).write_text("config: [1\n")
    with pytest.raises(ex.ConfigError, match="search.yaml: does not parse"):
        ex.Experiment(exp).search()
    (exp / ex.SEARCH_YAML).write_text(yaml.safe_dump(["not", "a", "mapping"]))
    with pytest.raises(ex.ConfigError, match="expected the keys config, space and search"):
        ex.Experiment(exp).search()
