"""A real (tiny) Ray search that optimises a verification score: --metric csi@1 (higher is better) is each
epoch's val_metric, Optuna maximises it, and the trial table and best_config.yaml rank by it."""

from __future__ import annotations

import math

import optuna
import pytest
import yaml

from tests.tune.conftest import load_study, read_results, search_in_process, trials_csv, write_space
from tune.search import main

# Two widths and two learning rates: the two trials' CSI differ.
SPACE = {"hidden_channels": {"layers": 1, "widths": [4, 16]}, "learning_rate": [1e-3, 3e-2]}


def test_search_maximises_the_metric_and_ranks_the_table_by_it(ray_session, demo_nc, tmp_path):
    space = write_space(tmp_path / "space.yaml", SPACE)
    code, out = search_in_process([
        "--data", demo_nc, "--space", space, "--batch-size", 4, "--num-samples", 2, "--max-epochs", 1,
        "--cpus-per-trial", 1, "--storage-path", tmp_path / "runs", "--name", "csi", "--seed", 0,
        "--metric", "csi@1",
    ])
    experiment = tmp_path / "runs" / "csi"
    assert code == 0, out[-3000:]
    table = trials_csv(experiment)
    assert "val_csi@1" in table.columns and "val_csi@1" in out
    values = table["val_csi@1"].tolist()
    assert len(values) == 2 and all(0 <= v <= 1 for v in values)
    assert values == sorted(values, reverse=True)  # rank 1: the highest CSI

    study = load_study(experiment)
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(t.value for t in done) == pytest.approx(sorted(values))
    for trial_dir in table["trial_id"].map(lambda i: next(experiment.glob(f"*{i}*"))):
        (record,) = read_results(trial_dir)
        assert math.isfinite(record["val_metric"]) and "val_loss" in record

    best = yaml.safe_load((experiment / "best_config.yaml").read_text())
    top = table.iloc[0]
    assert best["model"]["hidden_channels"] == [int(w) for w in str(top["hidden_channels"]).split()]
    assert best["train"]["learning_rate"] == pytest.approx(top["learning_rate"])
    assert best["train"]["val_metric"] == "csi@1"


@pytest.mark.parametrize("metric, message", [("csi10", "--metric csi10"), ("fss@10", "--metric fss@10")])
def test_an_unknown_metric_stops_the_search_before_ray_in_one_line(tmp_path, capsys, metric, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["--metric", metric, "--storage-path", str(tmp_path), "--name", "x"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
