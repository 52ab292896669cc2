"""Training on memory-mapped cache arrays: same batches, same losses, and memory that does not grow with the file."""

from __future__ import annotations

import os
import shutil
import sys

import numpy as np
import pytest
import torch

from benchmarks.large_file import bytes_per_step, run_measured, write_reference_stream
from data_io import DataConfig, prepare
from model import Config, ModelConfig, TrainConfig
from model.batches import cpu_batches, epoch_order
from model.trainer import Trainer
from tests.conftest import ROOT


@pytest.fixture
def both(demo_file, monkeypatch):
    """The small demo prepared in memory and through the cache (upstream box included)."""
    monkeypatch.delenv("CONVLSTM_TUNE_CACHE", raising=False)
    in_memory = prepare(DataConfig(data=str(demo_file), include_upstream=True))
    cached = prepare(DataConfig(data=str(demo_file), include_upstream=True, cache_threshold_mb=0))
    assert isinstance(cached.inputs, np.memmap)
    return in_memory, cached


def test_worker_processes_gather_the_same_batches_from_the_cache(both):
    in_memory, cached = both
    order = epoch_order(in_memory.starts("train"), shuffle=True, seed=1, epoch=1, batch_size=5)
    expected = list(cpu_batches(in_memory, order, num_workers=0, pin=False))
    got = list(cpu_batches(cached, order, num_workers=2, pin=False))
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, equal_nan=True)


def test_training_on_the_cache_gives_the_in_memory_losses(both, tmp_path):
    losses = []
    for data, name in zip(both, ("memory", "cache")):
        config = Config(data=data.config, model=ModelConfig(hidden_channels=[4]),
                        train=TrainConfig(output_dir=str(tmp_path / name), num_epochs=2, num_workers=0, seed=3,
                                          learning_rate=1e-3, checkpoint_every=0))
        history = Trainer(config, data, torch.device("cpu")).run()
        losses.append([(r.train_loss, r.val_loss) for r in history])
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)


def test_peak_memory_of_a_training_run_stays_far_below_the_file_size(tmp_path):
    # 2 GB in the reference schema (56 channels, the full 10-60N / 70-140E domain at 0.5 deg); one epoch from the
    # cache. A short training split keeps the epoch short; the cache still streams the whole file.
    steps = 640
    data = write_reference_stream(tmp_path / "big.nc", steps, resolution=0.5, chunk_steps=32)
    size = os.path.getsize(data)
    assert size >= steps * bytes_per_step(0.5)
    try:
        run = _train_one_epoch(data, tmp_path)
    finally:  # pytest keeps the folders of recent sessions: leave no 2 GB behind
        data.unlink()
        shutil.rmtree(tmp_path / ".convlstm-cache", ignore_errors=True)
    assert run["returncode"] == 0, run["log_tail"]
    assert "Caching the cropped, normalised arrays" in run["log_tail"]
    peak = run["peak_rss_mb"] * 2**20
    assert peak < 0.4 * size, f"peak RSS {peak / 2**20:.0f} MB for a {size / 2**20:.0f} MB file"


def _train_one_epoch(data, tmp_path) -> dict:
    return run_measured(
        [sys.executable, "-m", "model.train", "--data", str(data), "--output-dir", str(tmp_path / "run"),
         "--num-epochs", "1", "--device", "cpu", "--hidden-channels", "4", "--batch-size", "8", "--num-workers", "0",
         "--checkpoint-every", "0", "--cache-threshold-mb", "0", "--train-ratio", "0.3", "--val-ratio", "0.1"],
        env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
    )


@pytest.mark.slow
def test_a_12_gb_file_trains_for_an_epoch_under_a_6_gb_address_space_limit(tmp_path):
    """The issue's large-file run (~5 min, 13 GB of disk): python -m benchmarks.large_file --gb 12 --limit-gb 6."""
    import json

    from benchmarks.large_file import main

    output = tmp_path / "large_file.json"
    main(["--gb", "12", "--limit-gb", "6", "--folder", str(tmp_path / "large"), "--output", str(output)])
    result = json.loads(output.read_text())
    assert result["file_bytes"] >= 2 * result["limit_bytes"]
    for name, run in result["runs"].items():
        assert run["returncode"] == 0, (name, run["log_tail"])
        assert run["peak_rss_mb"] * 2**20 < result["limit_bytes"] / 4, (name, run["peak_rss_mb"])
    assert not (tmp_path / "large").exists(), "the 12 GB file is deleted afterwards"
