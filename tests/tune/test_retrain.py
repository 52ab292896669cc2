"""python -m tune.retrain on a real (tiny) search: the best config trained again, scored on the test split by
the same evaluation as python -m model.evaluate."""

from __future__ import annotations

import json
import math
import shutil

import pandas as pd
import pytest

from tests.tune.conftest import restored_logging
from tune._table import load_trials
from tune.retrain import chosen_config, main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def retrain(argv: list, capsys) -> tuple[int, str, str]:
    """tune.retrain in-process: (exit code, stdout, stderr)."""
    with restored_logging(), pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def test_retrain_scores_model_persistence_and_climatology_per_lead(experiment, tmp_path, capsys):
    """In-process (test_baseline.py runs python -m tune.retrain in a real process)."""
    out = tmp_path / "best"
    code, stdout, stderr = retrain([experiment, "--num-epochs", 2, "--output-dir", out, "--num-cases", 2,
                                    "--device", "cpu"], capsys)
    assert code == 0, stdout[-3000:] + stderr[-3000:]
    assert {"best.pt", "last.pt", "metrics.json", "metrics.md", "config.yaml"} <= {p.name for p in out.iterdir()}

    assert {"metrics.csv", "plots", "maps"} <= {p.name for p in out.iterdir()}
    metrics = json.loads((out / "metrics.json").read_text())
    assert "picked by validation among the top 3" in metrics["meta"]["config"]
    assert "test split" in metrics["meta"]["scored"]
    rows = pd.DataFrame(metrics["rows"])
    precip = rows[rows["variable"] == "precipitation"]
    assert set(precip["model"]) == {"model", "persistence", "climatology"}
    assert sorted(set(precip["lead"])) == [12, 24]
    for score in ("rmse", "mae", "csi@10mm"):
        for _, values in precip[precip["score"] == score].groupby("model")["value"]:
            assert len(values) == 2 and all(math.isfinite(v) for v in values)
    rmse = precip[precip["score"] == "rmse"].set_index(["model", "lead"])["value"]
    mae = precip[precip["score"] == "mae"].set_index(["model", "lead"])["value"]
    assert (rmse >= mae).all() and (mae > 0).all()

    table = (out / "metrics.md").read_text()
    assert "### precipitation, lead 12" in table and "### precipitation, lead 24" in table
    assert "| score | model | persistence | climatology |" in table and "| csi@10mm |" in table
    assert "### precipitation, lead 12" in stdout

    maps = sorted((out / "maps").iterdir())
    assert len(maps) == 2 and all(p.name.startswith("case_precipitation_") for p in maps)
    assert all(p.read_bytes().startswith(PNG_MAGIC) and p.stat().st_size > 5000 for p in maps)
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [1, 2]


def test_trial_flag_picks_that_trials_config_with_the_full_epoch_count(experiment):
    trials = load_trials(experiment)
    worst = trials.iloc[-1]
    config, source = chosen_config(experiment, worst["trial_id"][:6])
    assert config["model"]["hidden_channels"] == [int(w) for w in worst["hidden_channels"].split()]
    assert config["train"]["batch_size"] == worst["batch_size"]
    assert config["train"]["num_epochs"] == 100
    assert worst["trial_id"] in source


def test_default_is_best_config_yaml(experiment):
    config, source = chosen_config(experiment, None)
    best = load_trials(experiment).iloc[0]
    assert "best_config.yaml" in source
    assert config["train"]["learning_rate"] == pytest.approx(best["learning_rate"])


def test_unknown_trial_is_refused_with_the_known_ids(experiment, capsys):
    code, _, err = retrain([experiment, "--trial", "nosuch"], capsys)
    ids = pd.read_csv(experiment / "trials.csv")["trial_id"]
    assert code == 2 and "--trial nosuch" in err and all(i in err for i in ids)


def test_copied_experiment_without_its_data_file_asks_for_data(experiment, demo_nc, tmp_path, capsys):
    copy = shutil.copytree(experiment, tmp_path / "x")
    best = copy / "best_config.yaml"
    assert str(demo_nc) in best.read_text()
    best.write_text(best.read_text().replace(str(demo_nc), "/elsewhere/small.nc"))
    code, _, err = retrain([copy], capsys)
    assert code == 2 and "/elsewhere/small.nc" in err and "--data FILE" in err


def test_a_folder_that_is_not_an_experiment_is_refused(tmp_path, capsys):
    code, _, err = retrain([tmp_path], capsys)
    assert code == 2 and "not a search experiment" in err
