"""The speed options compute what the plain path computes (timings live in benchmarks/, not here)."""

import numpy as np
import pytest
import torch

from data_io import DataConfig, prepare
from model import Config, ModelConfig, TrainConfig
from model.batches import DeviceBatches, cpu_batches, epoch_order, optimizer_steps, shard_steps
from model.convlstm import ConvLSTMForecaster
from model.trainer import Trainer


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from data_io.demo import make_demo

    path = tmp_path_factory.mktemp("fast") / "demo.nc"
    make_demo(seed=1, days=40, resolution=5.0).to_netcdf(path)
    return prepare(DataConfig(data=str(path), include_upstream=True))


def test_batches_gathered_on_the_device_equal_the_dataloader_batches(data):
    order = epoch_order(data.starts("train"), shuffle=True, seed=5, epoch=2, batch_size=7)
    on_device = list(DeviceBatches(data, torch.device("cpu"))(order))
    loaded = list(cpu_batches(data, order, num_workers=0, pin=False))
    assert len(on_device) == len(loaded) == len(order)
    for a, b in zip(on_device, loaded):
        assert a.keys() == b.keys() == {"x", "y", "last", "up"}
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, equal_nan=True)


def test_channels_last_model_gives_the_same_forecast(data):
    torch.manual_seed(0)
    model = ConvLSTMForecaster(ModelConfig(hidden_channels=[6, 5]), 16, 1, upstream_channels=16)
    x = torch.from_numpy(data.inputs[:12].copy()).unsqueeze(0).repeat(2, 1, 1, 1, 1)[:, :6]
    up = torch.from_numpy(data.upstream[:12].copy()).unsqueeze(0).repeat(2, 1, 1, 1, 1)[:, :6]
    plain = model(x, up)
    fast = model.to(memory_format=torch.channels_last)(x, up)
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)


def test_a_channels_last_model_keeps_its_states_channels_last():
    """Its frames are channels-last slices of one buffer (not dense on their own); states made like them must be
    channels-last too, or every step's gate kernel mixes layouts and the convolutions transpose (BENCHMARKS §8)."""
    from model.convlstm import _channels_last_frames

    levels = ConvLSTMForecaster(ModelConfig(hidden_channels=[6, 5]), 16, 1).downstream
    frames = torch.randn(2, 3, 16, 7, 9)
    for h, c in levels.init_state(_channels_last_frames(frames)[:, 0]):
        assert h.stride(1) == c.stride(1) == 1
    for h, c in levels.init_state(frames[:, 0]):
        assert h.is_contiguous() and c.is_contiguous()


@pytest.mark.slow  # ~100 s on 2 CPU cores (inductor compiles the model): python -m pytest -m slow
def test_compiled_training_matches_eager_training(data, tmp_path):
    def run(compile_model: bool) -> list:
        config = Config(
            data=data.config,
            model=ModelConfig(hidden_channels=[4]),
            train=TrainConfig(output_dir=str(tmp_path / str(compile_model)), num_epochs=1, num_workers=0,
                              batch_size=8, seed=1, learning_rate=1e-3, compile=compile_model,
                              compile_mode="default", checkpoint_every=0),
        )
        history = Trainer(config, data, torch.device("cpu")).run()
        return [history[0].train_loss, history[0].val_loss]

    eager, compiled = run(False), run(True)
    np.testing.assert_allclose(compiled, eager, rtol=1e-4)


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("whole", [True, False])
def test_data_parallel_shards_hold_each_step_s_windows_once(whole, world):
    """Every optimizer step's windows land on exactly one rank; ranks run equally many micro-batches per step."""
    starts = np.arange(100, 173)  # 73 windows: a last batch of one window and a last step of one micro-batch
    steps = optimizer_steps(epoch_order(starts, True, 3, 1, 8), 3)
    shards = [shard_steps(steps, rank, world, whole) for rank in range(world)]
    stand_ins = 0
    for i, step in enumerate(steps):
        per_rank = [shards[r][i] for r in range(world)]
        assert len({len(s) for s in per_rank}) == 1, "DDP needs the same number of backward passes on every rank"
        real = np.concatenate([b for s in per_rank for b, is_real in s if is_real])
        np.testing.assert_array_equal(np.sort(real), np.sort(np.concatenate(step)))
        assert all(len(b) > 0 for s in per_rank for b, _ in s)
        stand_ins += sum(not is_real for s in per_rank for _, is_real in s)
        if whole:
            assert all(len(b) in (8, 73 % 8) for s in per_rank for b, _ in s), "whole micro-batches are never cut"
    assert stand_ins > 0, "the short last step needs a stand-in on some rank"
