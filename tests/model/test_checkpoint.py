"""Checkpoints describe themselves: the model is rebuilt from the stored config, never guessed from shapes."""

import numpy as np
import pytest
import torch

from data_io import ConfigError, DataConfig, prepare
from model import Config, ModelConfig, TrainConfig, fit
from model.checkpoint import (
    config_from_checkpoint,
    load,
    model_from_checkpoint,
    save_atomic,
    stats_from_checkpoint,
)


@pytest.fixture
def run(demo_file, tmp_path):
    config = Config(
        data=DataConfig(data=str(demo_file), include_upstream=True, forecast_steps=2, variables=["precipitation", "U"]),
        model=ModelConfig(hidden_channels=[3, 5], kernel_size=5),
        train=TrainConfig(output_dir=str(tmp_path / "run"), num_epochs=2, num_workers=0, checkpoint_every=2),
    )
    data = prepare(config.data)
    fit(config, data)
    return config, data, tmp_path / "run"


def test_checkpoint_rebuilds_the_trained_model_from_its_config(run):
    config, data, out = run
    assert {p.name for p in out.glob("*.pt")} == {"best.pt", "last.pt", "epoch_2.pt"}
    ckpt = load(out / "last.pt")
    assert ckpt["epoch"] == 2
    assert config_from_checkpoint(ckpt) == config
    model = model_from_checkpoint(ckpt).eval()
    x = torch.from_numpy(data.inputs[None, :6])
    up = torch.from_numpy(data.upstream[None, :6])
    assert model(x, up).shape == (1, 2, 1, *data.grid_shape)
    for name, value in model.state_dict().items():
        assert torch.equal(value, ckpt["model"][name])


def test_checkpoint_holds_the_normalisation_and_the_run_state(run):
    _, data, out = run
    ckpt = load(out / "best.pt")
    in_stats, tgt_stats = stats_from_checkpoint(ckpt)
    np.testing.assert_array_equal(in_stats.mean, data.input_stats.mean)
    assert tgt_stats.channels == ["precipitation"] and bool(tgt_stats.log[0])
    assert {"optimizer", "scaler", "rng", "history", "best_val_loss"} <= set(ckpt)
    assert ckpt["meta"]["channels"] == data.channels


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path):
    path = save_atomic({"a": torch.ones(2)}, tmp_path / "sub" / "x.pt")
    assert torch.equal(load(path)["a"], torch.ones(2))
    assert [p.name for p in path.parent.iterdir()] == ["x.pt"]


def test_loading_something_that_is_not_a_checkpoint_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match="no such checkpoint"):
        load(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    with pytest.raises(ConfigError, match="junk.pt: not a readable checkpoint"):
        load(junk)
