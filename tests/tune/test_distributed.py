"""Data-parallel training through Ray Train: two CPU workers (gloo) train like one process with the same batch."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from data_io import ConfigError, DataConfig, prepare
from model import checkpoint as ckpt_io
from model.config import Config, ModelConfig, TrainConfig
from model.trainer import fit
from tests.conftest import ROOT
from tests.tune.conftest import faults, restored_logging, search_env


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The demo on a 5-degree grid, 61 days: 79 training windows, so every epoch ends with a one-window batch."""
    from data_io.demo import write_demo

    path = write_demo(tmp_path_factory.mktemp("ddp") / "demo.nc", seed=0, days=61, resolution=5.0)
    return prepare(DataConfig(data=str(path)))


def config(out, **train) -> Config:
    defaults = dict(output_dir=str(out), num_epochs=3, num_workers=0, learning_rate=3e-3, seed=5, batch_size=6,
                    gradient_accumulation_steps=2, checkpoint_every=0, early_stopping_patience=5)
    return Config(data=DataConfig(), model=ModelConfig(hidden_channels=[4]), train=TrainConfig(**{**defaults, **train}))


@pytest.mark.parametrize(("batch", "accumulation"), [
    (9, 2),
    # ~40 s more on 2 cores (a second Ray Train run): python -m pytest tests/tune/test_distributed.py -m slow
    pytest.param(6, 3, marks=pytest.mark.slow),
], ids=["whole-micro-batches", "split-micro-batches"])
def test_two_cpu_workers_follow_the_single_process_loss_curve(ray_session, tiny, tmp_path, batch, accumulation):
    """(9, 2): each worker runs every other micro-batch of 9, and the epoch's last step has one micro-batch (of 7
    windows), so rank 1 runs a stand-in. (6, 3): each takes 3 windows of every micro-batch, and the last one holds
    a single window, so rank 1 runs a stand-in there."""
    from tune.distributed import fit_distributed

    n = len(tiny.starts("train"))
    assert n == 79 and (-(-n // batch) % accumulation == 1 if batch == 9 else n % batch == 1)
    single = fit(config(tmp_path / "one", batch_size=batch, gradient_accumulation_steps=accumulation), tiny)
    parallel = fit_distributed(config(tmp_path / "two", batch_size=batch, gradient_accumulation_steps=accumulation,
                                      ddp_cpu_workers=2), tiny)

    assert [r.epoch for r in parallel] == [r.epoch for r in single] == [1, 2, 3]
    for a, b in zip(parallel, single):
        assert a.effective_batch_size == b.effective_batch_size == batch * accumulation
        np.testing.assert_allclose([a.train_loss, a.val_loss, a.val_rmse], [b.train_loss, b.val_loss, b.val_rmse],
                                   rtol=1e-4)
    one, two = (ckpt_io.load(tmp_path / d / "best.pt") for d in ("one", "two"))  # same files, same format
    assert one.keys() == two.keys() and one["epoch"] == two["epoch"]
    for name, weight in one["model"].items():
        torch.testing.assert_close(two["model"][name], weight, rtol=1e-4, atol=1e-5)
    assert (tmp_path / "two" / "last.pt").is_file()


@pytest.mark.slow  # ~40 s on 2 cores: python -m pytest tests/tune/test_distributed.py -m slow
def test_two_cpu_workers_train_graphcasts_unet_like_one_process(ray_session, tiny, tmp_path):
    """The dual_stream family's U-Net (2x2 pooling, skips, GroupNorm in the cells, bottleneck attention) under DDP:
    GroupNorm normalises per sample, so two workers are exact; dropout off, since each rank draws its own masks."""
    from tune.distributed import fit_distributed

    unet = dict(topology="unet", hidden_channels=[4, 8], use_group_norm=True, use_attention=True, dropout_rate=0.0)

    def with_unet(c: Config) -> Config:
        c.model = ModelConfig(**unet)
        return c

    single = fit(with_unet(config(tmp_path / "one", num_epochs=2)), tiny)
    parallel = fit_distributed(with_unet(config(tmp_path / "two", num_epochs=2, ddp_cpu_workers=2)), tiny)
    for a, b in zip(parallel, single, strict=True):
        np.testing.assert_allclose([a.train_loss, a.val_loss, a.val_rmse], [b.train_loss, b.val_loss, b.val_rmse],
                                   rtol=1e-4)
    one, two = (ckpt_io.load(tmp_path / d / "best.pt") for d in ("one", "two"))
    assert ckpt_io.config_from_checkpoint(two).model.topology == "unet"
    for name, weight in one["model"].items():
        # A gate bias feeds GroupNorm, which takes each group's mean out again (a group is one or two
        # channels here): its gradient is (nearly) round-off, which AdamW scales up to full steps; the loss stays.
        if not name.endswith("gates.bias"):
            torch.testing.assert_close(two["model"][name], weight, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.slow  # four gloo processes on a 2-core machine, in a Ray of its own with 4 logical CPUs: ~2 min
def test_four_cpu_workers_follow_the_single_process_loss_curve(tmp_path):
    """The 4-worker step of issue 18 on CPUs, through the benchmark script that records it."""
    out = tmp_path / "ddp_cpu.json"
    run = subprocess.run([sys.executable, "-m", "benchmarks.ddp_cpu", "--workers", "4", "--output", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert {r["mode"] for r in rows} == {"whole micro-batches", "split micro-batches"}
    assert all(r["max_rel_diff"] <= 1e-4 for r in rows), rows


@pytest.mark.slow  # ~2 min here (three Ray Train worker-group starts); passed on the final code
def test_a_worker_killed_mid_epoch_restarts_from_the_last_checkpoint_and_ends_on_the_same_curve(
    ray_session, tiny, tmp_path
):
    """Through the installed convlstm-train (tune.train.main), --max-failures 1: one of two gloo workers SIGKILLs
    itself in its third training forward pass of epoch 2; Ray Train restarts both from epoch 1's last.pt."""
    from tune.train import main

    single = fit(config(tmp_path / "one"), tiny)
    marker = tmp_path / "killed"
    argv = ["--data", tiny.config.data, "--output-dir", tmp_path / "two", "--ddp-cpu-workers", 2, "--max-failures", 1,
            "--num-epochs", 3, "--num-workers", 0, "--learning-rate", 3e-3, "--seed", 5, "--batch-size", 6,
            "--gradient-accumulation-steps", 2, "--checkpoint-every", 0, "--early-stopping-patience", 5,
            "--hidden-channels", 4, "--device", "cpu"]
    with faults(ray_session, die_at_epoch=2, die_after_forwards=3, die_marker=str(marker)), restored_logging():
        with pytest.raises(SystemExit) as done:
            main([str(a) for a in argv])
    assert done.value.code == 0
    assert marker.is_file()  # a worker really died, mid-epoch
    history = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [1, 2, 3]
    np.testing.assert_allclose([(r["train_loss"], r["val_loss"]) for r in history],
                               [(r.train_loss, r.val_loss) for r in single], rtol=1e-4)
    assert ckpt_io.load(tmp_path / "two" / "last.pt")["epoch"] == 3


def test_data_parallel_runs_restart_once_by_default_and_the_flag_is_checked(tmp_path):
    assert config(tmp_path, ddp_cpu_workers=2).train.max_failures == 1
    with pytest.raises(ConfigError, match="--max-failures must be 0 or more, but got -1"):
        config(tmp_path, max_failures=-1).validate()


def test_the_installed_convlstm_train_is_the_data_parallel_entry():
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["convlstm-train"] == "tune.train:main"
    assert "tune.train import main" in (ROOT / "train_convlstm.py").read_text()


def test_a_batch_that_does_not_split_over_the_workers_is_refused_in_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"--batch-size 6 with --gradient-accumulation-steps 2 does not split over 4 "
                                          r"data-parallel workers: make the accumulation steps a multiple of 4"):
        config(tmp_path, num_gpus=4).validate()
    config(tmp_path, num_gpus=4, gradient_accumulation_steps=4).validate()  # whole micro-batches per worker
    config(tmp_path, num_gpus=3).validate()  # 2 windows of every micro-batch each
    with pytest.raises(ConfigError, match="pick one"):
        config(tmp_path, num_gpus=2, ddp_cpu_workers=2).validate()


@pytest.mark.slow  # ~25 s; the default suite already trains through two workers above
def test_retrain_with_two_cpu_workers_writes_the_single_process_outputs(
    ray_session, experiment, tmp_path
):
    out = tmp_path / "best"
    proc = subprocess.run(
        [sys.executable, "-m", "tune.retrain", str(experiment), "--ddp-cpu-workers", "2", "--batch-size", "4",
         "--gradient-accumulation-steps", "1",
         "--num-epochs", "2", "--output-dir", str(out), "--num-cases", "1", "--device", "cpu",
         "--address", ray_session.address],
        cwd=ROOT, env=search_env(), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert {"best.pt", "last.pt", "metrics.json", "metrics.md", "metrics.jsonl"} <= {p.name for p in out.iterdir()}
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [1, 2] and {r["effective_batch_size"] for r in history} == {4}
    assert "2 CPU workers (batch 2 x 1 accumulation steps per worker, effective batch 4)" in proc.stdout


def test_the_module_trainer_points_data_parallel_runs_to_train_convlstm(run_main, demo_file, tmp_path):
    code, _, err = run_main(["--data", demo_file, "--output-dir", tmp_path, "--num-gpus", "2"])
    assert code == 2 and "use python train_convlstm.py" in err


@pytest.mark.slow
def test_ddp_benchmark_times_one_and_two_workers_at_the_reference_grid_on_cpus(ray_session, tmp_path):
    """benchmarks/ddp.py's logic without GPUs (~40 s): the lead runs it with --gpus 1 2 on a 2-GPU machine."""
    from benchmarks.ddp import main

    output = tmp_path / "ddp.json"
    main(["--cpu", "--gpus", "1", "2", "--epochs", "2", "--days", "25", "--hidden-channels", "4", "--batch-size", "4",
          "--data", str(tmp_path / "reference.nc"), "--output", str(output)])
    result = json.loads(output.read_text())
    assert result["grid"] == [61, 61] and result["channels"] == 56
    one, two = result["rows"]
    assert (one["workers"], two["workers"]) == (1, 2) and (one["per_worker_batch"], two["per_worker_batch"]) == (4, 2)
    assert one["effective_batch_size"] == two["effective_batch_size"] == 4
    assert two["val_loss"] == pytest.approx(one["val_loss"], rel=1e-3)
    assert all(r["time_per_epoch_s"] > 0 for r in (one, two))


@pytest.mark.slow
def test_compiled_training_through_two_workers_follows_the_eager_loss_curve(ray_session, tiny, tmp_path):
    """--compile with DDP (~60 s of compiling on CPUs), accumulation and the one-window last batch included."""
    from tune.distributed import fit_distributed

    eager = fit(config(tmp_path / "eager", num_epochs=2), tiny)
    compiled = fit_distributed(config(tmp_path / "compiled", num_epochs=2, ddp_cpu_workers=2, compile=True,
                                      compile_mode="default"), tiny)
    np.testing.assert_allclose([(r.train_loss, r.val_loss) for r in compiled],
                               [(r.train_loss, r.val_loss) for r in eager], rtol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
@pytest.mark.parametrize(("batch", "accumulation"), [
    (9, 2),
    # ~40 s more on 2 cores (a second Ray Train run): python -m pytest tests/tune/test_distributed.py -m slow
    pytest.param(6, 3, marks=pytest.mark.slow),
], ids=["whole-micro-batches", "split-micro-batches"])
def test_two_gpus_with_cuda_graphs_follow_the_one_gpu_loss_curve(ray_session, tiny, tmp_path, batch, accumulation):
    """NCCL, DDP around the compiled module, CUDA graphs and stand-ins: python -m pytest -m gpu on 2 GPUs."""
    from tune.distributed import fit_distributed

    gpu = dict(batch_size=batch, gradient_accumulation_steps=accumulation, device="cuda", use_amp=False,
               compile=True, compile_mode="reduce-overhead")
    single = fit(config(tmp_path / "one", **gpu), tiny)
    parallel = fit_distributed(config(tmp_path / "two", num_gpus=2, **gpu), tiny)
    np.testing.assert_allclose([(r.train_loss, r.val_loss) for r in parallel],
                               [(r.train_loss, r.val_loss) for r in single], rtol=2e-3)
