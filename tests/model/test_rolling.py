"""Rolling forecasts, forecasts over a period, and graphcast's run_inference_convlstm.py, on tiny real checkpoints."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from data_io import NormStats
from data_io.demo import write_demo
from data_io.normalize import normalize_inplace
from model import checkpoint as ckpt_io
from model.predict import main
from model.rolling import Feedback, rolling_forecast

from tests.model.test_predict import _train  # noqa: E402  (one tiny-checkpoint trainer for both files)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("rolling")
    demo = write_demo(root / "demo.nc", days=20, resolution=5.0)
    return {
        "demo": demo,
        "multi": _train(demo, root / "multi", multi_variable=True, include_upstream=True, train_ratio=0.6,
                        val_ratio=0.2),
        "plain": _train(demo, root / "plain", train_ratio=0.6, val_ratio=0.2),
        "out": root / "out",
    }


def _predict(capsys, *args) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    return exit_info.value.code, capsys.readouterr().err


def test_feedback_converts_target_z_scores_to_the_inputs_own_z_scores():
    """Different statistics per side: the fed-back frame equals normalising the physical values as inputs."""
    rng = np.random.default_rng(0)
    phys = np.stack([rng.gamma(0.5, 4.0, (3, 5, 4)), rng.normal(280, 5, (3, 5, 4))], axis=1).astype("float32")
    phys[0, 0, 0, 0] = 0.0
    tgt = NormStats(["TEM", "pr"], np.array([281.0, 0.7]), np.array([4.0, 0.9]), np.array([False, True]))
    inp = NormStats(["pr", "TEM"], np.array([0.6, 279.0]), np.array([1.1, 6.0]), np.array([True, False]))
    z_t = phys[:, ::-1].copy()  # target channel order: TEM, pr
    normalize_inplace(z_t, tgt)
    expected = phys.copy()
    normalize_inplace(expected, inp)
    got = Feedback(inp, tgt, torch.device("cpu"))(torch.from_numpy(z_t)[None]).numpy()[0]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_rolling_forecast_step_one_is_the_direct_forecast_exactly(files):
    ckpt = ckpt_io.load(files["multi"])
    model = ckpt_io.model_from_checkpoint(ckpt).eval()
    in_stats, tgt_stats = ckpt_io.stats_from_checkpoint(ckpt)
    torch.manual_seed(0)
    c, h, w = len(in_stats.channels), len(ckpt["meta"]["lat"]), len(ckpt["meta"]["lon"])
    uh, uw = ckpt["meta"]["upstream_shape"]
    x, up = torch.randn(2, 6, c, h, w), torch.randn(2, 6 + 3, c, uh, uw)
    rolled = rolling_forecast(model, x, 4, in_stats, tgt_stats, up)
    assert rolled.shape == (2, 4, c, h, w)
    with torch.no_grad():
        assert torch.equal(rolled[:, :1], model(x, up[:, :6]))
        # Step 2 reads the last 5 observed frames plus the fed-back forecast, and the upstream frames 1..6.
        fed = Feedback(in_stats, tgt_stats, torch.device("cpu"))(rolled[:, :1])
        assert torch.equal(rolled[:, 1:2], model(torch.cat([x[:, 1:], fed], 1), up[:, 1:7]))


def test_four_rolling_steps_write_four_leads_and_the_first_is_the_direct_forecast(files, capsys):
    out = files["out"]
    init = "2020-01-10T00:00"
    code, err = _predict(capsys, "--checkpoint", files["multi"], "--data", files["demo"], "--output",
                         out / "roll.nc", "--init-time", init, "--rolling-steps", 4)
    assert code == 0, err
    code, err = _predict(capsys, "--checkpoint", files["multi"], "--data", files["demo"], "--output",
                         out / "direct.nc", "--init-time", init)
    assert code == 0, err
    with xr.open_dataset(out / "roll.nc") as roll, xr.open_dataset(out / "direct.nc") as direct:
        assert roll.sizes["time"] == 4 and roll.attrs["rolling_steps"] == 4
        np.testing.assert_array_equal(roll["forecast_period"].values / np.timedelta64(1, "h"), [12, 24, 36, 48])
        for name in direct.data_vars:
            np.testing.assert_array_equal(roll[name].isel(time=0).values, direct[name].isel(time=0).values)
        assert not np.array_equal(roll["TEM"].isel(time=1).values, roll["TEM"].isel(time=0).values)


def test_a_model_that_does_not_forecast_its_inputs_refuses_rolling_in_one_line(files, capsys):
    code, err = _predict(capsys, "--checkpoint", files["plain"], "--data", files["demo"], "--output",
                         files["out"] / "no.nc", "--rolling-steps", 2)
    assert code == 2
    assert err.startswith("python -m model.predict: error: --rolling-steps 2: the model does not forecast every")
    assert len(err.strip().splitlines()) == 1 and not (files["out"] / "no.nc").exists()


def test_rolling_too_close_to_the_end_for_the_observed_upstream_box_is_refused(files, capsys):
    with xr.open_dataset(files["demo"]) as ds:
        last = str(ds["time"].values[-1])[:16]
    code, err = _predict(capsys, "--checkpoint", files["multi"], "--data", files["demo"], "--output",
                         files["out"] / "late.nc", "--init-time", last, "--rolling-steps", 3)
    assert code == 2 and "observed upstream box 2 steps later" in err and len(err.strip().splitlines()) == 1


def test_a_period_is_one_file_of_initialisations_by_leads_with_2d_valid_times(files, capsys):
    out = files["out"] / "period.nc"
    code, err = _predict(capsys, "--checkpoint", files["multi"], "--data", files["demo"], "--output", out,
                         "--start-time", "2020-01-05", "--end-time", "2020-01-07", "--rolling-steps", 2,
                         "--batch-size", 2)
    assert code == 0, err
    with xr.open_dataset(out) as fc:
        inits = fc["forecast_reference_time"].values
        np.testing.assert_array_equal(inits, np.arange("2020-01-05T00", "2020-01-07T01", 12, dtype="datetime64[h]"))
        assert fc["precipitation"].dims == ("forecast_reference_time", "forecast_period", "lat", "lon")
        assert fc["time"].dims == ("forecast_reference_time", "forecast_period")
        np.testing.assert_array_equal(fc["time"].values, inits[:, None] + fc["forecast_period"].values[None, :])
        assert fc["forecast_period"].attrs["standard_name"] == "forecast_period"
        batched = fc["TEM"].sel(forecast_reference_time="2020-01-06T00").values
    single = files["out"] / "single.nc"
    code, err = _predict(capsys, "--checkpoint", files["multi"], "--data", files["demo"], "--output", single,
                         "--init-times", "2020-01-06T00:00", "--rolling-steps", 2)
    assert code == 0, err
    with xr.open_dataset(single) as one:
        assert one.sizes["forecast_reference_time"] == 1
        np.testing.assert_allclose(one["TEM"].isel(forecast_reference_time=0).values, batched, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("args, expected", [
    (["--init-times", "2020-01-06T03:00"], "--init-times 2020-01-06T03:00: not a time step of"),
    (["--start-time", "2021-01-01", "--end-time", "2021-02-01"], "--start-time 2021-01-01 --end-time 2021-02-01: "),
    (["--init-time", "2020-01-06", "--init-times", "2020-01-07"], "--init-time gives one forecast"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
])
def test_bad_period_is_refused_in_one_line(files, capsys, args, expected):
    code, err = _predict(capsys, "--checkpoint", files["multi"], "--data", files["demo"], "--output",
                         files["out"] / "bad.nc", *args)
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1


def _inference(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "run_inference_convlstm.py"), *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=300, check=False)


def test_graphcast_inference_command_runs_end_to_end_with_its_flags(files, tmp_path):
    """graphcast's command line: obsolete flags logged in one line, two models compared, maps drawn."""
    proc = _inference("--checkpoint", files["plain"], "--normalizer", "normalizer.pkl", "--model-type", "deep",
                      "--data", files["demo"], "--output-dir", tmp_path, "--specific-times", "2020-01-08T00:00:00",
                      "2020-01-09T12:00:00", "--compare-checkpoint", files["plain"].with_name("last.pt"),
                      "--exp1-name", "base", "--exp2-name", "again", "--visualize", "--viz-timesteps", "1",
                      "--viz-format", "png", "--viz-dpi", "40", "--viz-vmax", "50", "--downstream-lat-min", "25",
                      "--batch-size", "2", "--device", "cpu", "--log-level", "INFO")
    assert proc.returncode == 0, proc.stderr
    obsolete = [line for line in proc.stdout.splitlines() if "not needed any more" in line]
    assert len(obsolete) == 1 and "--normalizer, --model-type" in obsolete[0]
    with xr.open_dataset(tmp_path / "predictions.nc") as fc:
        assert fc.sizes["forecast_reference_time"] == 2 and "precipitation" in fc
    table = (tmp_path / "metrics.md").read_text()
    assert "| csi@1mm |" in table and "again − base [95%]" in table
    assert (tmp_path / "maps" / "case_precipitation_1.png").stat().st_size > 0


def test_graphcast_inference_command_refuses_bad_input_in_one_line_from_the_shell(files, tmp_path):
    proc = _inference("--checkpoint", files["plain"], "--data", files["demo"], "--output-dir", tmp_path,
                      "--rolling-steps", "3")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("run_inference_convlstm.py: error: --rolling-steps 3: the model does not forecast")
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "predictions.nc").exists()


@pytest.mark.parametrize("args, expected", [
    (["--include-upstream"], "--include-upstream: --checkpoint "),
    (["--downstream-lat-min", "20"], "--downstream-lat-min 20.0: --checkpoint "),
    (["--viz-timesteps", "7"], "--viz-timesteps 7: there are "),
    (["--viz-format", "tiff"], "argument --viz-format: invalid choice"),
])
def test_graphcast_inference_command_refuses_bad_input(files, tmp_path, capsys, args, expected):
    from model.inference import main as inference

    with pytest.raises(SystemExit) as exit_info:
        inference(["--checkpoint", str(files["plain"]), "--data", str(files["demo"]), "--output-dir",
                   str(tmp_path), "--specific-times", "2020-01-08T00:00", "--visualize", *args])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and expected in err
    if "invalid choice" not in expected:  # argparse's own errors come after its usage lines
        assert len(err.strip().splitlines()) == 1
