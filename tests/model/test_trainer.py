"""The training loop on real (small) files: exact accumulation, exact resume, masked metrics, the OOM path."""

import numpy as np
import pytest
import torch

from data_io import DataConfig, prepare
from model import Config, ConvLSTMForecaster, ModelConfig, OutOfMemory, TrainConfig, fit
from model.metrics import denormalize, latitude_weights
from model.trainer import Trainer


@pytest.fixture(scope="module")
def gappy_data(tmp_path_factory):
    """The small demo with a land cell and random gaps in the target, so micro-batches hold unequal counts."""
    from data_io.demo import make_demo

    ds = make_demo(seed=0, days=60, resolution=5.0)
    rain = ds["precipitation"].values
    rain[:, 4, 9] = np.nan  # 30N 115E, inside the downstream box
    rain[np.random.default_rng(0).random(rain.shape) < 0.1] = np.nan
    ds["precipitation"].values[:] = rain
    path = tmp_path_factory.mktemp("data") / "gappy.nc"
    ds[["precipitation", "TEM", "U"]].to_netcdf(path)
    return prepare(DataConfig(data=str(path)))


def make_config(out, **train) -> Config:
    defaults = dict(output_dir=str(out), num_epochs=1, num_workers=0, learning_rate=1e-3, seed=3)
    train_config = TrainConfig(**{**defaults, **train})
    return Config(data=DataConfig(), model=ModelConfig(hidden_channels=[4, 4]), train=train_config)


def trained(data, out, **train) -> Trainer:
    trainer = Trainer(make_config(out, **train), data, torch.device("cpu"))
    trainer.run()
    return trainer


def assert_same_weights(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=atol, msg=name)


def test_accumulated_micro_batches_step_like_one_big_batch(gappy_data, tmp_path):
    assert len(gappy_data.starts("train")) % 8 != 0, "the epoch ends with a partial batch"
    big = Trainer(make_config(tmp_path / "big", batch_size=8, gradient_clip_norm=0), gappy_data, torch.device("cpu"))
    initial = {k: v.clone() for k, v in big.model.state_dict().items()}
    big.run()
    small = trained(gappy_data, tmp_path / "small", batch_size=4, gradient_accumulation_steps=2, gradient_clip_norm=0)
    moved = max((big.model.state_dict()[k] - v).abs().max().item() for k, v in initial.items())
    assert moved > 1e-3, "the weights moved, so equality below is not trivial"
    assert_same_weights(big.model.state_dict(), small.model.state_dict(), atol=1e-5)
    assert big.history[0].train_loss == pytest.approx(small.history[0].train_loss, rel=1e-5)


def test_one_accumulation_step_has_the_gradient_of_the_whole_batch(gappy_data, tmp_path):
    """The gradient itself, before any optimizer step: k micro-batches of b against one batch of k*b."""
    trainer = Trainer(make_config(tmp_path, batch_size=8), gappy_data, torch.device("cpu"))
    shards, _ = trainer._train_steps(epoch=1)
    batch = next(iter(trainer._source([shards[0][0][0]])))

    def grads(parts):
        trainer.model.zero_grad()
        count = sum(torch.isfinite(p["y"]).sum() for p in parts)
        for p in parts:
            pred = trainer.model(p["x"])
            sq = torch.where(torch.isfinite(p["y"]), pred - torch.nan_to_num(p["y"]), 0.0) ** 2
            (sq.sum() / count).backward()
        return [q.grad.clone() for q in trainer.model.parameters()]

    halves = [{k: v[:4] for k, v in batch.items()}, {k: v[4:] for k, v in batch.items()}]
    assert torch.isfinite(halves[0]["y"]).sum() != torch.isfinite(halves[1]["y"]).sum()
    for g_whole, g_parts in zip(grads([batch]), grads(halves)):
        torch.testing.assert_close(g_whole, g_parts, rtol=1e-4, atol=1e-7)


def test_remainder_group_at_epoch_end_still_steps(gappy_data, tmp_path):
    n_windows = len(gappy_data.starts("train"))
    micro = -(-n_windows // 4)
    assert micro % 3 != 0, "the last accumulation group is partial"
    small = trained(gappy_data, tmp_path / "small", batch_size=4, gradient_accumulation_steps=3, gradient_clip_norm=0)
    steps = {int(s["step"]) for s in small.optimizer.state_dict()["state"].values()}
    assert steps == {-(-micro // 3)}
    big = trained(gappy_data, tmp_path / "big", batch_size=12, gradient_clip_norm=0)
    assert_same_weights(big.model.state_dict(), small.model.state_dict(), atol=1e-5)


def test_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(gappy_data, tmp_path):
    straight = fit(make_config(tmp_path / "straight", num_epochs=4, batch_size=8), gappy_data)
    fit(make_config(tmp_path / "resumed", num_epochs=2, batch_size=8), gappy_data)
    resumed = fit(
        make_config(tmp_path / "resumed", num_epochs=4, batch_size=8, resume=str(tmp_path / "resumed" / "last.pt")),
        gappy_data,
    )
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 4
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    assert [r.epoch for r in resumed] == [1, 2, 3, 4]
    assert [r.train_loss for r in resumed] == [r.train_loss for r in straight]


def test_losses_and_metrics_stay_finite_and_match_brute_force_with_nan_targets(gappy_data, tmp_path):
    trainer = trained(gappy_data, tmp_path, batch_size=8)
    rec = trainer.history[0]
    assert all(np.isfinite([rec.train_loss, rec.val_loss, rec.val_rmse, rec.persistence_rmse]))

    d, c = gappy_data, gappy_data.config
    starts = d.starts("val")
    x = d.inputs[starts[:, None] + np.arange(c.window_size)]
    y = d.targets[(starts + c.window_size - 1 + c.target_offset)[:, None]]
    last = d.targets[starts + c.window_size - 1]
    with torch.no_grad():
        pred = trainer.model.eval()(torch.from_numpy(x)).double().numpy()
    assert np.isnan(y).any()
    val = trainer.evaluate("val")
    assert val["loss"] == pytest.approx(np.nanmean((pred - y) ** 2), rel=1e-5)

    truth, model, persist = (denormalize(v, d.target_stats) for v in (y, pred, last[:, None]))
    w = latitude_weights(d.lat)[:, None]

    def weighted_rmse(forecast):
        ok = np.isfinite(truth) & np.isfinite(forecast)
        ww = np.where(ok, w, 0.0)
        return np.sqrt(np.sum(ww * np.nan_to_num(forecast - truth) ** 2) / ww.sum())

    assert val["rmse"] == pytest.approx(weighted_rmse(model), rel=1e-4)
    assert val["persistence_rmse"] == pytest.approx(weighted_rmse(persist), rel=1e-4)


def test_every_epoch_yields_one_complete_record(gappy_data, tmp_path):
    seen = []
    history = fit(make_config(tmp_path, num_epochs=2, batch_size=8), gappy_data, on_epoch=lambda *a: seen.append(a))
    assert [r.epoch for r in history] == [1, 2] and len(seen) == 2
    rec = history[-1].to_dict()
    assert set(rec) >= {"epoch", "train_loss", "val_loss", "val_rmse", "persistence_rmse", "time_per_epoch_s",
                        "samples_per_s", "peak_memory_mb", "device"}
    assert rec["device"] == "cpu" and rec["samples_per_s"] > 0 and rec["effective_batch_size"] == 8


def test_early_stopping_ends_the_run(gappy_data, tmp_path):
    history = fit(make_config(tmp_path, num_epochs=6, batch_size=8, learning_rate=1e-12, early_stopping_patience=1),
                  gappy_data)
    assert len(history) < 6


@pytest.mark.parametrize(
    "error",
    [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
     RuntimeError("MPS backend out of memory (MPS allocated: 17.00 GB)"),
     torch.OutOfMemoryError()],
)
def test_oom_in_a_forward_pass_ends_as_out_of_memory(gappy_data, tmp_path, monkeypatch, error):
    def forward(self, *args):
        raise error

    monkeypatch.setattr(ConvLSTMForecaster, "forward", forward)
    with pytest.raises(OutOfMemory, match="out of memory on cpu"):
        fit(make_config(tmp_path), gappy_data)


def test_other_errors_in_a_forward_pass_are_not_hidden(gappy_data, tmp_path, monkeypatch):
    def forward(self, *args):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(ConvLSTMForecaster, "forward", forward)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        fit(make_config(tmp_path), gappy_data)
