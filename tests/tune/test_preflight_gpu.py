"""The memory pre-flight on a real GPU: the trainer-probe calibration predicts configs it did not probe.

Skipped without a GPU; on a GPU machine: python -m pytest -m gpu tests/tune/test_preflight_gpu.py
The accuracy over many configs is a benchmark (python -m benchmarks.preflight, BENCHMARKS.md), not a test.
"""

from __future__ import annotations

import tempfile

import pytest
import torch

from data_io import DataConfig, prepare
from model.memory import DataShape
from model.trainer import fit
from tune._preflight import calibrate, probe_configs
from tune.experiment import trial_config

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_a_graphed_calibration_per_topology_predicts_unprobed_configs_within_a_fifth(tmp_path):
    from data_io.demo import write_demo

    path = write_demo(tmp_path / "demo.nc", seed=3, days=60, resolution=0.5)
    base = {"data": {"data": str(path), "include_upstream": True}, "model": {},
            "train": {"num_epochs": 1, "device": "cuda", "checkpoint_every": 0, "num_workers": 0,
                      "data_on_device": "off"}}
    data = prepare(DataConfig(data=str(path), include_upstream=True))
    shape = DataShape.of(data)
    calibration = calibrate(probe_configs(base, shape), shape, "cuda", data)
    assert set(calibration.topologies) == {"stacked", "unet"}
    for params in ({"hidden_channels": [32, 96], "batch_size": 12},
                   {"model_type": "dual_stream", "hidden_channels": [48, 96], "batch_size": 6}):
        config = trial_config(base, params)
        predicted = calibration.predict_mb(calibration.footprint(config, shape), 0.0, config.model.topology)
        with tempfile.TemporaryDirectory() as out:
            config.train.output_dir = out
            measured = fit(config, data)[-1].peak_memory_mb
        assert abs(predicted / measured - 1) < 0.2, (params, predicted, measured)


def test_a_finished_graphed_fit_leaves_nothing_allocated_for_the_next_trial(tmp_path):
    """The trainer and its CUDA graphs form a reference cycle; fit() collects it, so a reused actor's next trial
    starts with the card as the last one found it."""
    from data_io.demo import write_demo

    data = prepare(DataConfig(data=str(write_demo(tmp_path / "demo.nc", seed=3, days=40, resolution=1.0))))
    config = trial_config({"data": {"data": str(data.config.data)}, "model": {"hidden_channels": [32]},
                           "train": {"num_epochs": 3, "device": "cuda", "checkpoint_every": 0, "num_workers": 0,
                                     "output_dir": str(tmp_path / "run")}}, {})
    torch.cuda.empty_cache()
    before = torch.cuda.memory_reserved()
    fit(config, data)
    assert torch.cuda.memory_reserved() <= before + 2**20


def test_u_net_fits_one_after_another_leave_nothing_allocated_between_them(tmp_path):
    """cuBLAS's per-stream workspaces (the U-Net's attention runs on cuBLAS) are handed back with the rest."""
    from data_io.demo import write_demo

    path = write_demo(tmp_path / "demo.nc", seed=3, days=40, resolution=0.5)
    data = prepare(DataConfig(data=str(path)))
    base = {"data": {"data": str(path)}, "model": {},
            "train": {"num_epochs": 1, "device": "cuda", "checkpoint_every": 0, "num_workers": 0}}
    for i in range(3):
        config = trial_config(base, {"model_type": "dual_stream", "hidden_channels": [16, 32], "use_attention": True})
        config.train.output_dir = str(tmp_path / f"run{i}")
        fit(config, data)
        assert torch.cuda.memory_allocated() == 0, (i, torch.cuda.memory_allocated())


def test_the_first_fit_of_a_fresh_process_leaves_its_data_on_the_gpu_to_no_one(tmp_path):
    """A process's first fit: nothing it put on the GPU (the data kept there, the model, its graphs) stays allocated
    after it returns. Run in a fresh interpreter, where torch's one-off lazy imports happen inside that fit."""
    import subprocess
    import sys

    from data_io.demo import write_demo

    path = write_demo(tmp_path / "demo.nc", seed=3, days=40, resolution=0.5)
    script = f"""
import gc, torch
from data_io import DataConfig, prepare
from tune.experiment import trial_config
from model.trainer import fit
data = prepare(DataConfig(data={str(path)!r}))
config = trial_config({{"data": {{"data": {str(path)!r}}}, "model": {{"hidden_channels": [32]}},
                       "train": {{"num_epochs": 1, "device": "cuda", "checkpoint_every": 0, "num_workers": 0,
                                 "data_on_device": "on", "output_dir": {str(tmp_path / "run")!r}}}}}, {{}})
import model.trainer as tr
fit(config, data)
gc.collect()
print(sum(isinstance(o, tr.Trainer) for o in gc.get_objects()), torch.cuda.memory_allocated())
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    trainers, allocated = map(int, out.stdout.split()[-2:])
    assert (trainers, allocated) == (0, 0), out.stdout


def test_by_default_every_trial_gets_the_one_share_the_spaces_largest_config_fits(ray_session, demo_nc, tmp_path):
    """--gpus-per-trial left out on a GPU cluster is fit: the demo space's largest config fits 1/8 of a card, but
    the session's Ray has 2 CPUs, so no more than 2 trials run at once and the share is 1/2."""
    from tests.tune.conftest import search_in_process, trials_csv
    from tune._preflight import decisions

    code, out = search_in_process(["--data", demo_nc, "--num-samples", 4, "--max-epochs", 1, "--grace-epochs", 1,
                                   "--device", "auto", "--storage-path", tmp_path, "--name", "fit"])
    assert code == 0, out
    assert {d["share"] for d in decisions(tmp_path / "fit")} == {0.5}
    table = trials_csv(tmp_path / "fit")
    assert len(table) == 4 and set(table["status"]) == {"ok"} and set(table["device"]) == {"cuda"}
