"""--baseline and tune.retrain --top-k on one real tiny search: the user's config runs first, marked, exactly."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

import optuna
import pandas as pd
import pytest
import yaml

from data_io.demo import make_demo
from tests.conftest import ROOT
from tests.tune.conftest import search_in_process
from tune._table import load_trials
from tune.search import main as search_main

# A config outside the default space: one layer of 12 (not a searched width), kernel 5 (not searched).
BASELINE = {"model": {"hidden_channels": [12], "kernel_size": 5}, "train": {"batch_size": 3, "learning_rate": 1e-3,
                                                                          "num_epochs": 50}}


def _env(ray_tmp: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "CONVLSTM_TEST_FAULTS")}
    env.update(RAY_TMPDIR=ray_tmp, CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(ROOT))
    return env


def _run(module: str, args: list, timeout: int = 400) -> subprocess.CompletedProcess:
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay short
    try:
        return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=ROOT, env=_env(ray_tmp),
                              capture_output=True, text=True, timeout=timeout)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def searched(ray_session, tmp_path_factory):
    base = tmp_path_factory.mktemp("baseline")
    data = base / "small.nc"
    make_demo(seed=1, days=60, resolution=5.0).to_netcdf(data)
    config = base / "mine.yaml"
    config.write_text(yaml.safe_dump(BASELINE))
    code, out = search_in_process(["--data", data, "--baseline", config, "--num-samples", 2, "--max-epochs", 1,
                                   "--grace-epochs", 1, "--device", "cpu", "--storage-path", base, "--name", "b",
                                   "--cpus-per-trial", 1])
    assert code == 0, out[-4000:]
    return base / "b", str(config), out


def test_baseline_runs_first_marked_with_its_exact_config(searched):
    experiment, name, out = searched
    storage = f"sqlite:///{experiment / 'optuna.db'}"
    (summary,) = optuna.get_all_study_summaries(storage)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    first = min(study.trials, key=lambda t: t.number)
    assert first.user_attrs["baseline"] == name
    # Inside the default space: learning rate 1e-3 and accumulation 1; batch 3 and width 12 are not choices there.
    assert first.params == {"learning_rate": pytest.approx(1e-3), "gradient_accumulation_steps": 1}

    trials = load_trials(experiment)
    assert len(trials) == 3 and list(trials["baseline"]).count(name) == 1
    row = trials[trials["baseline"] == name].iloc[0]
    assert row["hidden_channels"] == "12" and row["batch_size"] == 3 and row["epochs"] == 1
    params = json.loads((experiment / row["trial_dir"] / "params.json").read_text())
    ran = params["baseline"]["config"]
    assert ran["model"]["kernel_size"] == 5 and ran["train"]["learning_rate"] == 1e-3
    assert ran["train"]["num_epochs"] == 1  # the search's epochs, not the file's 50
    assert row["vs_baseline"] == pytest.approx(0.0)
    others = trials[trials["baseline"] != name]
    assert (others["vs_baseline"] == others["val_loss"] / row["val_loss"] - 1).all()
    csv = pd.read_csv(experiment / "trials.csv", keep_default_na=False)
    assert "baseline" in csv.columns and "vs_baseline" in csv.columns and name in set(csv["baseline"])
    assert name in out


def test_top_k_retrains_k_and_the_baseline_and_reports_the_difference_with_an_interval(searched, tmp_path):
    experiment, name, _ = searched
    out = tmp_path / "best"
    proc = _run("tune.retrain", [experiment, "--top-k", "2", "--num-epochs", "1", "--output-dir", out,
                                 "--num-cases", "1", "--device", "cpu"])
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    retrained = sorted(p.name for p in (tmp_path / "retrain").iterdir())
    assert len(retrained) == 3 and "baseline-mine" in retrained
    assert all((tmp_path / "retrain" / r / "best.pt").is_file() for r in retrained)
    summary = json.loads((out / "comparison" / "summary.json").read_text())
    assert summary["baseline"] == "baseline-mine" and summary["reference"] == "baseline-mine"
    picked = summary["picked"]
    val = summary["val_loss"]
    assert picked == min(val, key=val.get)
    assert (out / "best.pt").read_bytes() == (tmp_path / "retrain" / picked / "best.pt").read_bytes()
    rows = pd.read_csv(out / "comparison" / "metrics.csv")
    assert set(rows["model"]) >= set(retrained)
    for score in ("rmse", "csi@10mm"):
        diff = rows[(rows["score"] == score) & (rows["model"] != "baseline-mine") & rows["difference"].notna()]
        assert set(diff["model"]) == set(retrained) - {"baseline-mine"}
        assert (diff["low"] <= diff["difference"]).all() and (diff["difference"] <= diff["high"]).all()
    md = (out / "metrics.md").read_text()
    assert "Against the baseline" in md and f"Picked by validation: {picked}" in md
    if picked != "baseline-mine":
        assert "RMSE:" in md and "CSI at 10 mm:" in md and "[95% " in md
    assert "Against the baseline" in proc.stdout


def test_bad_baseline_is_one_line_naming_what_is_allowed(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        search_main(["--baseline", "resnet", "--storage-path", str(tmp_path), "--name", "bad"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1
    assert "--baseline resnet" in err and "dual_stream" in err and "config file" in err and "none" in err
    assert not (tmp_path / "bad").exists()


def test_default_baseline_is_dual_stream_with_data_and_none_on_the_demo():
    from tune._baseline import requested

    assert requested(None, demo=False) == ["dual_stream"] and requested(None, demo=True) == []
    assert requested(["none"], demo=False) == [] and requested(["stacked", "deep"], demo=True) == ["stacked", "deep"]


def test_preset_baseline_takes_the_searchs_data_and_epochs_and_the_presets_model(tmp_path):
    from model.config import Config
    from tune._baseline import resolve

    base = Config().to_dict()
    base["data"]["data"], base["train"]["num_epochs"], base["train"]["batch_size"] = "x.nc", 2, 8
    (config,) = resolve(["dual_stream"], base).values()
    assert config["model"]["model_type"] == "dual_stream" and config["model"]["hidden_channels"] == [64, 128]
    assert config["model"]["topology"] == "unet" and config["data"]["data"] == "x.nc"
    assert config["train"]["num_epochs"] == 2 and config["train"]["batch_size"] == 8
