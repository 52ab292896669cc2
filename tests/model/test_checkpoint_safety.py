"""Loading a checkpoint never runs code from it: plain contents, weights_only loading, damaged files refused."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.serialization import get_unsafe_globals_in_checkpoint

from data_io import DataConfig, prepare
from model import Config, ModelConfig, TrainConfig, fit
from model.checkpoint import CheckpointError, load, model_from_checkpoint, save_atomic
from tests.conftest import ROOT

LEGACY = ROOT / "tests" / "data" / "checkpoint_v0.1.0.pt"  # written by release 0.1.0 (weights_only=False era)


def legacy_config(demo_file: Path, out: Path, **train) -> Config:
    """The config LEGACY was trained with, on the same demo grid (make_demo(seed=0, days=60, resolution=5.0))."""
    return Config(data=DataConfig(data=str(demo_file), forecast_steps=2, variables=["precipitation", "U"]),
                  model=ModelConfig(hidden_channels=[4]),
                  train=TrainConfig(output_dir=str(out), num_epochs=1, num_workers=0, device="cpu", **train))


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    """A checkpoint of the current trainer (tiny model, one epoch)."""
    from data_io.demo import write_demo

    tmp = tmp_path_factory.mktemp("ckpt")
    path = write_demo(tmp / "demo.nc", seed=0, days=60, resolution=5.0)
    config = legacy_config(path, tmp / "run")
    fit(config, prepare(config.data))
    return tmp / "run" / "last.pt"


def predict_cli(checkpoint: Path, data: Path, out: Path, capsys) -> tuple[int, str]:
    from model.predict import main

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        with pytest.raises(SystemExit) as done:
            main(["--checkpoint", str(checkpoint), "--data", str(data), "--output", str(out), "--device", "cpu"])
    finally:
        root.handlers[:], root.level = handlers, level
    return done.value.code, capsys.readouterr().err


def test_a_new_checkpoint_holds_only_plain_values_and_loads_with_plain_weights_only(written):
    assert get_unsafe_globals_in_checkpoint(written) == []
    ckpt = torch.load(written, weights_only=True)  # no allow-list at all
    assert isinstance(ckpt["config"], dict) and isinstance(ckpt["input_stats"]["mean"], list)
    assert all(isinstance(ckpt["rng"][k]["state"], torch.Tensor) for k in ("python", "numpy"))


def test_a_release_0_1_checkpoint_still_loads_predicts_and_resumes(demo_file, tmp_path, capsys):
    ckpt = load(LEGACY)
    assert ckpt["epoch"] == 1 and isinstance(ckpt["rng"]["numpy"], tuple)  # the old, ndarray-holding form
    model_from_checkpoint(ckpt)
    code, err = predict_cli(LEGACY, demo_file, tmp_path / "forecast.nc", capsys)
    assert code == 0, err
    assert (tmp_path / "forecast.nc").is_file()
    config = legacy_config(demo_file, tmp_path / "resumed", resume=str(LEGACY))
    config.train.num_epochs = 2
    history = fit(config, prepare(config.data))
    assert [r.epoch for r in history] == [1, 2]


class _CreatesAFile:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


@pytest.mark.parametrize("with_digest", [True, False], ids=["saved-by-save_atomic", "plain-torch-save"])
def test_a_checkpoint_with_a_reduce_payload_is_refused_and_the_payload_never_runs(
    written, demo_file, tmp_path, capsys, with_digest
):
    target = tmp_path / "pwned"
    state = {**torch.load(written, weights_only=True), "history": [_CreatesAFile(target)]}
    evil = tmp_path / "evil.pt"
    save_atomic(state, evil) if with_digest else torch.save(state, evil)
    assert not target.exists()
    with pytest.raises(CheckpointError, match=r"evil.pt: refused: loading it would call posix.system"):
        load(evil)
    code, err = predict_cli(evil, demo_file, tmp_path / "out.nc", capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and str(evil) in err
    assert not target.exists() and not (tmp_path / "out.nc").exists()


def _damaged(raw: bytes, rng: np.random.Generator, kind: str) -> bytes:
    if kind == "truncated":
        return raw[: int(rng.integers(0, len(raw)))]
    flipped = bytearray(raw)
    # "tail-flip": the zip directory and the digest, which positions drawn over the whole file rarely hit.
    i = int(rng.integers(0, len(raw))) if kind == "bit-flip" else len(raw) - 1 - int(rng.integers(0, 200))
    flipped[i] ^= 1 << int(rng.integers(0, 8))
    return bytes(flipped)


def test_truncated_and_bit_flipped_checkpoints_give_one_line_and_exit_2_every_time(
    written, demo_file, tmp_path, capsys
):
    rng = np.random.default_rng(19)
    raw = written.read_bytes()
    for n, kind in enumerate(["truncated"] * 10 + ["bit-flip"] * 15 + ["tail-flip"] * 5):
        path = tmp_path / f"{kind}_{n}.pt"
        damaged = _damaged(raw, rng, kind)
        assert damaged != raw
        path.write_bytes(damaged)
        code, err = predict_cli(path, demo_file, tmp_path / "out.nc", capsys)
        assert code == 2, (kind, n, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and f"{path}: not a readable checkpoint" in lines[0], (kind, n, err)
    assert not (tmp_path / "out.nc").exists()


def test_the_real_cli_refuses_a_truncated_checkpoint_in_one_line(written, demo_file, tmp_path):
    path = tmp_path / "cut.pt"
    path.write_bytes(written.read_bytes()[:5000])
    proc = subprocess.run([sys.executable, "-m", "model.predict", "--checkpoint", str(path), "--data", str(demo_file),
                           "--output", str(tmp_path / "out.nc"), "--device", "cpu"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and str(path) in proc.stderr
