"""python -m model.predict: CF forecast files from a checkpoint, and one-line refusals of data that does not fit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from data_io import DataConfig
from data_io.demo import write_demo
from model.config import Config, ModelConfig, TrainConfig
from model.predict import main
from model.trainer import fit

REPO = Path(__file__).resolve().parents[2]


def _train(data: Path, out: Path, **data_kw) -> Path:
    config = Config(
        data=DataConfig(data=str(data), **data_kw),
        model=ModelConfig(hidden_channels=[4]),
        train=TrainConfig(output_dir=str(out), device="cpu", num_epochs=1, num_workers=0, batch_size=8),
    )
    fit(config)
    return out / "best.pt"


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("predict")
    demo = write_demo(root / "demo.nc", days=60, resolution=2.5)
    with xr.open_dataset(demo) as ds:
        ds = ds.load()
    ds.drop_vars("TEM").to_netcdf(root / "no_tem.nc")
    ds.sel(level=[850.0, 500.0]).to_netcdf(root / "two_levels.nc")
    ds.isel(time=slice(0, 6)).to_netcdf(root / "one_window.nc")
    (root / "parts").mkdir()
    ds.isel(time=slice(0, 60)).to_netcdf(root / "parts" / "a.nc")
    ds.isel(time=slice(60, None)).to_netcdf(root / "parts" / "b.nc")
    ds.isel(time=[i for i in range(ds.sizes["time"]) if i != ds.sizes["time"] - 3]).to_netcdf(root / "gap.nc")
    return {
        "demo": demo,
        "coarse": write_demo(root / "res2.nc", days=60, resolution=2.0),
        "no_tem": root / "no_tem.nc",
        "two_levels": root / "two_levels.nc",
        "one_window": root / "one_window.nc",
        "parts": root / "parts",
        "gap": root / "gap.nc",
        "ckpt": _train(demo, root / "plain"),
        "upstream": _train(demo, root / "upstream", include_upstream=True),
        "levels": _train(demo, root / "levels", target=["TEM", "precipitation"], forecast_steps=2, target_offset=2),
        "out": root / "out",
    }


def _predict(capsys, *args: str) -> tuple[int, str]:
    """Run the CLI in-process; returns (exit code, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    return exit_info.value.code, capsys.readouterr().err


def test_forecast_is_cf_netcdf_in_mm_valid_after_the_last_step(files, capsys):
    out = files["out"] / "latest.nc"
    code, err = _predict(capsys, "--checkpoint", files["ckpt"], "--data", files["demo"], "--output", out)
    assert code == 0, err
    with xr.open_dataset(files["demo"]) as src, xr.open_dataset(out) as fc:
        assert fc["precipitation"].dims == ("time", "lat", "lon")
        assert fc["precipitation"].attrs["units"] == "mm"
        assert fc.attrs["Conventions"] == "CF-1.8" and "model.predict" in fc.attrs["history"]
        init = src["time"].values[-1]
        assert fc["forecast_reference_time"].values == init
        np.testing.assert_array_equal(fc["time"].values, [init + np.timedelta64(12, "h")])
        np.testing.assert_allclose(fc["lat"], np.arange(25.0, 40.1, 2.5))
        np.testing.assert_allclose(fc["lon"], np.arange(110.0, 125.1, 2.5))
        rain = fc["precipitation"].values
        assert np.isfinite(rain).all() and (rain >= 0).all()
        assert fc["lat"].attrs["units"] == "degrees_north" and "_FillValue" not in fc["lat"].encoding


def test_init_time_picks_the_window_ending_there(files, capsys):
    out = files["out"] / "init.nc"
    code, err = _predict(capsys, "--checkpoint", files["ckpt"], "--data", files["demo"], "--output", out,
                         "--init-time", "2020-01-10T12:00")
    assert code == 0, err
    with xr.open_dataset(out) as fc:
        assert fc["forecast_reference_time"].values == np.datetime64("2020-01-10T12:00", "ns")
        assert fc.attrs["forecast_reference_time"] == "2020-01-10T12:00:00"
        np.testing.assert_array_equal(fc["time"].values, [np.datetime64("2020-01-11T00:00", "ns")])


def test_a_file_one_window_long_is_enough_because_statistics_come_from_the_checkpoint(files, capsys):
    out = files["out"] / "short.nc"
    code, err = _predict(capsys, "--checkpoint", files["ckpt"], "--data", files["one_window"], "--output", out)
    assert code == 0, err
    with xr.open_dataset(out) as short, xr.open_dataset(files["demo"]) as src:
        assert short["forecast_reference_time"].values == src["time"].values[5]


def test_a_glob_a_list_and_a_folder_forecast_as_the_one_file_does(files, capsys):
    outs = {}
    parts = files["parts"]
    for name, data in (("one", [files["demo"]]), ("glob", [parts / "*.nc"]), ("list", [parts / "a.nc", parts / "b.nc"]),
                       ("folder", [parts])):
        outs[name] = files["out"] / f"form_{name}.nc"
        code, err = _predict(capsys, "--checkpoint", files["ckpt"], "--data", *data, "--output", outs[name])
        assert code == 0, err
    with xr.open_dataset(outs["one"]) as one:
        for name in ("glob", "list", "folder"):
            with xr.open_dataset(outs[name]) as other:
                np.testing.assert_array_equal(other["precipitation"].values, one["precipitation"].values)


def test_an_input_window_across_a_gap_is_refused_in_one_line(files, capsys):
    code, err = _predict(capsys, "--checkpoint", files["ckpt"], "--data", files["gap"], "--output",
                         files["out"] / "gap_fc.nc")
    assert code == 2 and "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert "input steps up to" in line and "span a gap" in line and "the time step is 12 h" in line


@pytest.mark.parametrize(
    ("init_time", "expected"),
    [("2020-01-05T01:00", "not a time step"), ("2020-01-02T00:00", "or later"), ("noon", "not an ISO time")],
)
def test_bad_init_time_is_refused_in_one_line(files, capsys, init_time, expected):
    code, err = _predict(capsys, "--checkpoint", files["ckpt"], "--data", files["demo"],
                         "--output", files["out"] / "bad.nc", "--init-time", init_time)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "--init-time" in err and expected in err


@pytest.mark.parametrize(
    ("name", "expected"),
    [("coarse", "was trained on lat 25..40 (7 points, step 2.5)"), ("no_tem", "no TEM"),
     ("two_levels", "trained on [850.0, 500.0, 200.0]")],
)
def test_data_that_does_not_match_the_checkpoint_is_refused_in_one_line(files, capsys, name, expected):
    out = files["out"] / f"{name}.nc"
    code, err = _predict(capsys, "--checkpoint", files["ckpt"], "--data", files[name], "--output", out)
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert str(files[name]) in err and expected in err
    assert not out.exists()


def test_upstream_model_predicts(files, capsys):
    out = files["out"] / "upstream.nc"
    code, err = _predict(capsys, "--checkpoint", files["upstream"], "--data", files["demo"], "--output", out)
    assert code == 0, err
    with xr.open_dataset(out) as fc:
        assert fc["precipitation"].shape == (1, 7, 7)
        assert np.isfinite(fc["precipitation"].values).all()


def test_target_with_levels_is_written_as_time_level_lat_lon(files, capsys):
    out = files["out"] / "levels.nc"
    code, err = _predict(capsys, "--checkpoint", files["levels"], "--data", files["demo"], "--output", out)
    assert code == 0, err
    with xr.open_dataset(out) as fc:
        assert fc["TEM"].dims == ("time", "level", "lat", "lon") and fc["TEM"].attrs["units"] == "K"
        assert fc["level"].values.tolist() == [850.0, 500.0, 200.0] and fc["level"].attrs["units"] == "hPa"
        assert fc["precipitation"].dims == ("time", "lat", "lon")
        init = fc["forecast_reference_time"].values
        # target_offset 2, forecast_steps 2, 12-hourly file: valid 24 h and 36 h after the initialisation.
        np.testing.assert_array_equal(fc["time"].values - init, np.array([24, 36], dtype="timedelta64[h]"))
        assert 150.0 < float(fc["TEM"].min()) and float(fc["TEM"].max()) < 350.0


def test_module_refuses_mismatched_grid_with_exit_2_and_no_traceback(files):
    proc = subprocess.run(
        [sys.executable, "-m", "model.predict", "--checkpoint", str(files["ckpt"]), "--data", str(files["coarse"]),
         "--output", str(files["out"] / "cli.nc")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("python -m model.predict: error: --data ") and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_graphcast_family_run_from_the_command_line_forecasts_without_guessing(tmp_path, run_main, capsys):
    """The done-when command line (graphcast's dual_stream_deep, upstream, multi-variable, attention, heavy-rain
    weight) with small widths, then model.predict from its checkpoint: the checkpoint carries the architecture."""
    demo = write_demo(tmp_path / "demo.nc", days=40, resolution=2.0)
    code, _, err = run_main(["--data", str(demo), "--output-dir", str(tmp_path / "run"), "--model-type",
                             "dual_stream_deep", "--include-upstream", "--multi-variable", "--use-attention",
                             "--high-precip-weight", "3", "--num-epochs", "1", "--num-workers", "0",
                             "--hidden-channels", "4", "6", "8", "8", "--device", "cpu"])
    assert code == 0, err
    from model.checkpoint import load, model_from_checkpoint

    ckpt = load(tmp_path / "run" / "last.pt")
    model = model_from_checkpoint(ckpt)
    assert ckpt["config"]["model"]["topology"] == "unet" and model.decoder is not None
    assert ckpt["config"]["model"]["use_attention"] and model.head.out_channels == len(ckpt["meta"]["channels"])
    code, err = _predict(capsys, "--checkpoint", tmp_path / "run" / "last.pt", "--data", demo, "--output",
                         tmp_path / "fc.nc")
    assert code == 0, err
    with xr.open_dataset(tmp_path / "fc.nc") as fc:
        assert {"precipitation", "TEM"} <= set(fc.data_vars)
        assert np.isfinite(fc["precipitation"].values).all()
