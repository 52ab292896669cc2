"""The CLI as users run it: end to end on the demo data, and one clear line (exit 2) for every bad input."""

import json
import re

import numpy as np
import pytest
import torch

from model.checkpoint import config_from_checkpoint, load, model_from_checkpoint
from model.convlstm import ConvLSTMForecaster

FAST = ["--num-epochs", "1", "--num-workers", "0", "--hidden-channels", "4"]


def assert_one_line_error(code, err, *needles, exit_code=2):
    assert code == exit_code, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("train_convlstm.py: error: ")
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


# ---- end to end ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("extra", [[], ["--include-upstream", "--num-workers", "0"]], ids=["downstream", "upstream"])
def test_train_convlstm_runs_end_to_end_on_the_demo(run_script, demo_file, tmp_path, extra):
    out = tmp_path / "run"
    proc = run_script("--data", demo_file, "--output-dir", out, "--num-epochs", "2", "--device", "auto",
                      "--hidden-channels", "8", *extra)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "Device: cpu" in proc.stdout
    assert len(re.findall(r"epoch \d/2 .* time_per_epoch \d+\.\d+ s", proc.stdout)) == 2
    assert (out / "best.pt").is_file() and (out / "last.pt").is_file()
    assert "Device: cpu" in (out / "train.log").read_text()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert all(np.isfinite(r["val_rmse"]) and np.isfinite(r["persistence_rmse"]) for r in records)

    ckpt = load(out / "last.pt")
    assert config_from_checkpoint(ckpt).data.include_upstream == bool(extra)
    model = model_from_checkpoint(ckpt)
    assert (model.upstream is not None) == bool(extra)
    assert ckpt["target_stats"]["channels"] == ["precipitation"]


# ---- bad input, in a real process ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "needles"),
    [
        # Each case is a new process (~5 s of imports on 2 cores); the in-process cases below cover the rest.
        (["--data", "{not_netcdf}"], ["--data", "not_netcdf.nc", "not a readable netCDF file"]),
        (["--data", "{demo}", "--device", "cuda"], ["--device cuda"]),
    ],
    ids=["not-netcdf", "no-gpu"],
)
def test_bad_input_is_one_line_and_exit_2_in_a_real_process(run_script, demo_file, tmp_path, args, needles):
    not_netcdf = tmp_path / "not_netcdf.nc"
    not_netcdf.write_text("time,precipitation\n2000-01-01,1.0\n")
    args = [a.format(not_netcdf=not_netcdf, demo=demo_file) for a in args]
    proc = run_script(*args, "--output-dir", tmp_path / "run", *FAST)
    assert_one_line_error(proc.returncode, proc.stderr, *needles)


# ---- bad input, in-process ----------------------------------------------------------------------------------------
@pytest.fixture
def bad_files(write_nc, small_demo):
    no_time = small_demo.isel(time=0, drop=True)
    short = small_demo.isel(time=slice(0, 12))
    dry = small_demo.copy(deep=True)
    dry["precipitation"].values[:] = np.nan
    return {
        "no_time": write_nc(no_time, "no_time.nc"),
        "short": write_nc(short, "short.nc"),
        "all_nan": write_nc(dry, "all_nan.nc"),
    }


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--data", "missing.nc"], ["--data", "missing.nc", "no such file"]),
        (["--data", "{no_time}"], ["no_time.nc", "no 'time' dimension"]),
        (["--data", "{demo}", "--variables", "TEM", "RAIN"], ["--variables RAIN", "the file has precipitation, DPT"]),
        (["--data", "{demo}", "--target", "tp"], ["--target tp", "the file has precipitation, DPT, GPH, TEM, U, V"]),
        (["--data", "{demo}", "--downstream-lat-min", "-60", "--downstream-lat-max", "-40"],
         ["--downstream-lat/lon-min/max", "demo.nc", "lat 10..60"]),
        (["--data", "{demo}", "--include-upstream", "--upstream-lon-min", "150", "--upstream-lon-max", "170"],
         ["--include-upstream", "demo.nc", "--upstream-lat/lon-min/max"]),
        (["--data", "{short}"], ["short.nc", "one window needs 7", "--window-size"]),
        (["--data", "{all_nan}"], ["all_nan.nc", "NaN everywhere", "--target"]),
        (["--data", "{demo}", "--batch-size", "-1"], ["--batch-size", "got -1"]),
        (["--data", "{demo}", "--batch-size", "0"], ["--batch-size", "got 0"]),
        (["--data", "{demo}", "--num-epochs", "0"], ["--num-epochs", "got 0"]),
        (["--data", "{demo}", "--gradient-accumulation-steps", "0"], ["--gradient-accumulation-steps", "got 0"]),
        (["--data", "{demo}", "--device", "cuda"], ["--device cuda", "--device cpu"]),
        (["--data", "{demo}", "--device", "mps"], ["--device mps", "--device cpu"]),
        ([], ["--data is missing"]),
    ],
    ids=["missing-file", "no-time", "variables", "target", "box", "upstream-box", "too-short", "all-nan-target",
         "batch-size", "batch-size-0", "epochs", "accumulation", "no-cuda", "no-mps", "no-data"],
)
def test_bad_input_is_one_line_and_exit_2(run_main, monkeypatch, bad_files, demo_file, tmp_path, args, needles):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    args = [a.format(demo=demo_file, **bad_files) for a in args]
    code, _, err = run_main(["--output-dir", tmp_path / "run", *FAST, *args])
    assert_one_line_error(code, err, *needles)


def test_out_of_memory_is_one_line_with_advice_and_exit_3(run_main, monkeypatch, demo_file, tmp_path):
    def forward(self, *args):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 15.78 GiB total)")

    monkeypatch.setattr(ConvLSTMForecaster, "forward", forward)
    code, _, err = run_main(["--data", demo_file, "--output-dir", tmp_path / "run", *FAST])
    assert_one_line_error(code, err, "out of memory", "--batch-size", "--gradient-accumulation-steps",
                          "--hidden-channels", exit_code=3)


def test_in_process_run_writes_metrics_and_logs_the_best_epoch(run_main, demo_file, tmp_path):
    code, out, err = run_main(["--data", demo_file, "--output-dir", tmp_path / "run", *FAST, "--checkpoint-every", "1"])
    assert code == 0, err
    assert "Best epoch 1" in out
    assert (tmp_path / "run" / "epoch_1.pt").is_file()
    assert not list((tmp_path / "run").glob("*.tmp")), "checkpoints are renamed into place"
