"""The weighted heavy-rain and multi-variable loss: against brute force, and exact under accumulation."""

import numpy as np
import pytest
import torch

from data_io import DataConfig, NormStats, prepare
from model import Config, ModelConfig, TrainConfig
from model.losses import ForecastLoss
from model.trainer import Trainer


def _stats() -> NormStats:
    return NormStats(channels=["TEM@850", "precipitation"], mean=np.array([280.0, 0.5]), std=np.array([10.0, 1.2]),
                     log=np.array([False, True]))


def test_weighted_multi_variable_loss_is_graphcasts_formula_in_physical_units():
    rng = np.random.default_rng(0)
    stats = _stats()
    y = rng.normal(size=(3, 2, 2, 5, 6)).astype(np.float32) * 1.5
    y[0, 0, 1, 2, 3] = np.nan
    pred = rng.normal(size=y.shape).astype(np.float32)
    loss = ForecastLoss(TrainConfig(high_precip_threshold=4.0, high_precip_weight=3.0, precip_loss_weight=10.0), stats)
    sse, w = loss.sums(torch.tensor(pred), torch.tensor(y))
    got = float(loss.value(sse, w))

    # Brute force: graphcast's MultiVariableLoss, NaN cells left out.
    rain_mm = np.expm1(y[:, :, 1] * 1.2 + 0.5)
    weights = np.where(rain_mm > 4.0, 3.0, 1.0)
    assert 0 < (rain_mm > 4.0).sum() < rain_mm.size, "some cells, not all, are heavy rain"
    ok = np.isfinite(y[:, :, 1])
    err = (pred[:, :, 1] - y[:, :, 1]) ** 2
    precip = (weights * err)[ok].sum() / weights[ok].sum()
    ok_t = np.isfinite(y[:, :, 0])
    other = ((pred[:, :, 0] - y[:, :, 0]) ** 2)[ok_t].mean()
    assert got == pytest.approx(10.0 * precip + other, rel=1e-5)


def test_defaults_give_masked_means_and_the_plain_mse_for_rain_alone():
    rng = np.random.default_rng(1)
    y = rng.normal(size=(2, 1, 2, 4, 4)).astype(np.float32)
    y[0, 0, 0, 0, 0] = np.nan
    pred = rng.normal(size=y.shape).astype(np.float32)
    loss = ForecastLoss(TrainConfig(), _stats())
    sse, w = loss.sums(torch.tensor(pred), torch.tensor(y))
    ok = np.isfinite(y)
    # No heavy-rain weighting by default; precip_loss_weight (10) applies because other channels are predicted too.
    p, t = ok[:, :, 1], ok[:, :, 0]
    expected = 10.0 * ((pred - y)[:, :, 1][p] ** 2).mean() + ((pred - y)[:, :, 0][t] ** 2).mean()
    assert float(loss.value(sse, w)) == pytest.approx(expected, rel=1e-5)
    rain_only = NormStats(["precipitation"], np.array([0.5]), np.array([1.2]), np.array([True]))
    single = ForecastLoss(TrainConfig(), rain_only)
    sse, w = single.sums(torch.tensor(pred[:, :, 1:]), torch.tensor(y[:, :, 1:]))
    assert float(single.value(sse, w)) == pytest.approx(((pred - y)[:, :, 1][p] ** 2).mean(), rel=1e-5)


def test_per_step_weights_agree_with_the_batch_sums():
    rng = np.random.default_rng(2)
    targets = rng.normal(size=(7, 2, 3, 4)).astype(np.float32) * 2
    targets[2, 1, 0, 0] = np.nan
    loss = ForecastLoss(TrainConfig(high_precip_threshold=3.0, high_precip_weight=5.0), _stats())
    per_step = loss.per_step_weights(targets)
    _, w = loss.sums(torch.zeros(1, 7, 2, 3, 4), torch.tensor(targets[None]))
    np.testing.assert_allclose(per_step.sum(axis=0), w.numpy(), rtol=1e-6)
    assert per_step[:, 0].max() > 12, "heavy-rain cells weigh more than one"


@pytest.fixture(scope="module")
def multi_variable_data(tmp_path_factory):
    from data_io.demo import make_demo

    ds = make_demo(seed=0, days=60, resolution=5.0)
    rain = ds["precipitation"].values
    rain[np.random.default_rng(0).random(rain.shape) < 0.1] = np.nan
    ds["precipitation"].values[:] = rain
    path = tmp_path_factory.mktemp("data") / "mv.nc"
    ds[["precipitation", "TEM", "U"]].to_netcdf(path)
    data = prepare(DataConfig(data=str(path), multi_variable=True))
    assert data.target_channels == data.channels and len(data.channels) > 1
    return data


def _trainer(data, out, **train) -> Trainer:
    t = TrainConfig(output_dir=str(out), num_epochs=1, num_workers=0, learning_rate=1e-3, seed=3, gradient_clip_norm=0,
                    high_precip_threshold=1.0, high_precip_weight=3.0, precip_loss_weight=10.0, **train)
    config = Config(data=DataConfig(multi_variable=True), model=ModelConfig(hidden_channels=[4, 4]), train=t)
    return Trainer(config, data, torch.device("cpu"))


def test_weighted_multi_variable_accumulation_steps_like_one_big_batch(multi_variable_data, tmp_path):
    big = _trainer(multi_variable_data, tmp_path / "big", batch_size=8)
    assert big.step_weights[:, 0].sum() > np.isfinite(multi_variable_data.targets[:, :1]).sum(), "heavy rain present"
    initial = {k: v.clone() for k, v in big.model.state_dict().items()}
    big.run()
    small = _trainer(multi_variable_data, tmp_path / "small", batch_size=4, gradient_accumulation_steps=2)
    small.run()
    moved = max((big.model.state_dict()[k] - v).abs().max().item() for k, v in initial.items())
    assert moved > 1e-3
    for name, value in big.model.state_dict().items():
        torch.testing.assert_close(value, small.model.state_dict()[name], rtol=0, atol=1e-5, msg=name)
    assert big.history[0].train_loss == pytest.approx(small.history[0].train_loss, rel=1e-5)


@pytest.mark.parametrize("model", [dict(hidden_channels=[4, 4]),
                                   dict(model_type="dual_stream", hidden_channels=[4, 8], dropout_rate=0.0)],
                         ids=["stacked", "dual_stream"])
def test_a_batch_padded_with_nan_targets_gives_the_same_loss_and_gradients(multi_variable_data, tmp_path, model):
    """CUDA graphs replay the epoch's last, smaller batch padded to the full batch (model/batches.pad_batch): the
    padding must add nothing. The micro-step here is the one the graphs capture, run eagerly on the CPU."""
    from model.batches import gather, pad_batch
    from model._presets import preset

    trainer = _trainer(multi_variable_data, tmp_path, batch_size=5)
    if "model_type" in model:
        config = trainer.config
        config.model = ModelConfig(**{**preset(model["model_type"]), **model})
        trainer = Trainer(config, multi_variable_data, torch.device("cpu"))
    c = trainer.config.data
    starts = multi_variable_data.starts("train")[:3]
    arrays = {"inputs": multi_variable_data.inputs, "targets": multi_variable_data.targets}
    batch = {k: torch.as_tensor(v) for k, v in
             gather(arrays, starts, c.window_size, c.target_offset, c.forecast_steps).items()}
    factor = torch.tensor([0.3, 0.7])

    def step(x, up, y) -> tuple[torch.Tensor, list[torch.Tensor]]:
        trainer.optimizer.zero_grad(set_to_none=False)
        sse = trainer._micro_step(x, up, y, factor)
        return sse, [p.grad.clone() for p in trainer.model.parameters()]

    x, up, y = pad_batch(batch, 5)
    assert x.shape[0] == y.shape[0] == 5 and torch.isnan(y[3:]).all() and not x[3:].any()
    padded_sse, padded_grads = step(x, up, y)
    sse, grads = step(batch["x"], batch.get("up"), batch["y"])
    assert sse.abs().sum() > 0 and max(g.abs().max() for g in grads) > 0
    torch.testing.assert_close(padded_sse, sse, rtol=1e-5, atol=1e-6)
    for padded, plain in zip(padded_grads, grads):
        torch.testing.assert_close(padded, plain, rtol=1e-4, atol=1e-6)
