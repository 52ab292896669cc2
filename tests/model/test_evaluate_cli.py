"""python -m model.evaluate end to end on two tiny checkpoints of different architectures (stacked, single
target; U-Net, multi-variable) trained one epoch on a small demo file; and --metric in the trainer's history."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data_io import DataConfig
from data_io.demo import make_demo
from model.config import Config, ModelConfig, TrainConfig
from model.evaluate import evaluate_checkpoint, main
from model.trainer import fit

ROOT = Path(__file__).resolve().parents[2]
FAST = ["--rain-thresholds", "1", "10", "--fss-windows", "1", "3", "--bootstrap-samples", "200", "--device", "cpu"]


def _train(data: Path, out: Path, model: ModelConfig, **data_kw) -> Path:
    config = Config(data=DataConfig(data=str(data), forecast_steps=2, **data_kw), model=model,
                    train=TrainConfig(output_dir=str(out), num_epochs=1, num_workers=0, device="cpu",
                                      val_metric="csi@10"))
    history = fit(config)
    assert history[0].val_metric is not None and 0.0 <= history[0].val_metric <= 1.0
    return out / "best.pt"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("evaluate")
    data = root / "demo.nc"
    make_demo(seed=0, days=60, resolution=5.0).to_netcdf(data)
    other = root / "other.nc"
    make_demo(seed=1, days=60, resolution=5.0).to_netcdf(other)
    return {
        "data": data, "other": other,
        "base": _train(data, root / "base", ModelConfig(hidden_channels=[8])),
        "unet": _train(data, root / "unet", ModelConfig(hidden_channels=[4, 8], topology="unet"),
                       multi_variable=True),
    }


def evaluate_cli(argv: list, capsys) -> tuple[int, str, str]:
    root = logging.getLogger()
    saved = root.handlers[:]
    capsys.readouterr()
    try:
        with pytest.raises(SystemExit) as exit_info:
            main([str(a) for a in argv])
    finally:
        for h in root.handlers:
            if h not in saved:
                h.close()
        root.handlers[:] = saved
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def rows(out: Path) -> pd.DataFrame:
    return pd.DataFrame(json.loads((out / "metrics.json").read_text())["rows"])


def test_two_architectures_side_by_side_with_csi_at_10mm_and_intervals(runs, tmp_path):
    out = tmp_path / "eval"
    proc = subprocess.run(
        [sys.executable, "-m", "model.evaluate", "--checkpoint", runs["base"], "--checkpoint", runs["unet"],
         "--name", "base", "--name", "deep", "--data", runs["data"], "--output-dir", out, "--cases", "1", *FAST],
        cwd=ROOT, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = rows(out)
    precip = table[table["variable"] == "precipitation"]
    assert set(precip["model"]) == {"base", "deep", "persistence", "climatology"}
    assert set(table["variable"]) == {"precipitation"}  # the multi-variable model's extra targets: not shared
    csi = precip[(precip["score"] == "csi@10mm")]
    assert len(csi) == 4 * 2  # four methods, two leads
    deep = csi[csi["model"] == "deep"]
    assert (deep["reference"] == "base").all()
    assert (deep["low"] <= deep["difference"]).all() and (deep["difference"] <= deep["high"]).all()
    assert "| csi@10mm |" in proc.stdout and "deep − base [95%]" in (out / "metrics.md").read_text()
    csv = pd.read_csv(out / "metrics.csv")
    assert len(csv) == len(table)
    assert sorted(p.name for p in (out / "plots").iterdir()) == [
        "performance_precipitation_10mm.png", "performance_precipitation_1mm.png", "skill_precipitation.png"]
    assert [p.name for p in (out / "maps").iterdir()] == ["case_precipitation_0.png"]


def test_identical_checkpoints_differ_by_intervals_that_cover_zero(runs, tmp_path, capsys):
    out = tmp_path / "same"
    code, _, err = evaluate_cli(["--checkpoint", runs["base"], "--checkpoint", runs["base"], "--name", "a",
                                 "--name", "b", "--output-dir", out, "--cases", "0", "--format", "svg", *FAST], capsys)
    assert code == 0, err
    diffs = rows(out).dropna(subset=["difference"])
    assert len(diffs) > 20 and set(diffs["model"]) == {"b"}
    assert ((diffs["low"] <= 0) & (diffs["high"] >= 0)).all() and not diffs["significant"].any()
    assert (out / "plots" / "skill_precipitation.svg").is_file()


def test_table_rmse_agrees_with_the_scorers_evaluation(runs, tmp_path, capsys):
    out = tmp_path / "one"
    code, _, err = evaluate_cli(["--checkpoint", runs["base"], "--output-dir", out, "--cases", "0", *FAST], capsys)
    assert code == 0, err
    rmse = rows(out).query("score == 'rmse'").set_index(["model", "lead"])["value"]
    reference = evaluate_checkpoint(runs["base"], device="cpu")["channels"]["precipitation"]["rmse"]
    for method, name in (("model", "base"), ("persistence", "persistence"), ("climatology", "climatology")):
        np.testing.assert_allclose([rmse[name, 12], rmse[name, 24]], reference[method], rtol=1e-4)


def test_a_period_scores_the_windows_initialised_in_it(runs, tmp_path, capsys):
    out = tmp_path / "period"
    code, _, err = evaluate_cli(["--checkpoint", runs["base"], "--start-time", "2020-01-20", "--end-time",
                                 "2020-01-25", "--output-dir", out, "--cases", "0", *FAST], capsys)
    assert code == 0, err
    meta = json.loads((out / "metrics.json").read_text())["meta"]
    assert "initialised in 2020-01-20..2020-01-25" in meta["scored"]
    n = int(meta["scored"].split()[0])
    assert 0 < n <= 6 * 2 + 1  # 12-hourly steps


@pytest.mark.parametrize("argv, message", [
    ([], "--checkpoint is required"),
    (["--checkpoint", "nosuch.pt"], "--checkpoint nosuch.pt: no such file"),
    (["--checkpoint", "{base}", "--name", "a", "--name", "b"], "--name: 2 names for 1 checkpoints"),
    (["--checkpoint", "{base}", "--name", "persistence"], "must differ"),
    (["--checkpoint", "{base}", "--format", "gif"], "--format"),
    (["--checkpoint", "{base}", "--rain-thresholds", "0"], "--rain-thresholds must be positive"),
    (["--checkpoint", "{base}", "--data", "{other}"], "normalisation differ from the checkpoint's"),
    (["--checkpoint", "{base}", "--start-time", "2031-01-01"], "no complete window"),
])
def test_bad_input_is_one_line_and_exit_2(runs, tmp_path, capsys, argv, message):
    argv = [a.format(**runs) for a in argv] + ["--output-dir", tmp_path / "bad", "--device", "cpu"]
    code, _, err = evaluate_cli(argv, capsys)
    assert code == 2 and message in err.strip().splitlines()[-1] and "Traceback" not in err


def test_an_unknown_metric_is_refused_naming_the_flag(demo_file, tmp_path):
    from data_io import ConfigError

    config = Config(data=DataConfig(data=str(demo_file)), train=TrainConfig(val_metric="csi10"))
    with pytest.raises(ConfigError, match="--metric csi10"):
        config.validate()
    config.train.val_metric = "rmse_skill_climatology"
    with pytest.raises(ConfigError, match="--metric rmse_skill_climatology"):
        config.validate()
