import pytest
import torch

from model import ConvLSTMForecaster, ModelConfig


@pytest.mark.parametrize("hidden", [[4], [4, 6, 8]])
@pytest.mark.parametrize("steps", [1, 3])
def test_forecast_shape_follows_depth_steps_and_targets(hidden, steps):
    model = ConvLSTMForecaster(ModelConfig(hidden_channels=hidden, kernel_size=3), 5, 2, forecast_steps=steps)
    assert len(model.downstream.cells) == len(hidden)
    assert model(torch.randn(2, 4, 5, 6, 7)).shape == (2, steps, 2, 6, 7)


def test_one_convolution_computes_all_four_gates():
    model = ConvLSTMForecaster(ModelConfig(hidden_channels=[4, 8]), 5, 1)
    convs = [m for m in model.downstream.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [16, 32]
    assert [c.in_channels for c in convs] == [5 + 4, 4 + 8]


def test_upstream_stream_on_another_grid_changes_the_forecast():
    torch.manual_seed(0)
    model = ConvLSTMForecaster(ModelConfig(hidden_channels=[4]), 3, 1, upstream_channels=3)
    x = torch.randn(2, 4, 3, 5, 5)
    up = torch.randn(2, 4, 3, 8, 11)
    out = model(x, up)
    assert out.shape == (2, 1, 1, 5, 5)
    assert not torch.allclose(out, model(x, torch.zeros_like(up)))


# ---- the model family: topology, norms, attention, dropout and the upstream fusion are config ----------------------

from model._presets import PRESETS, preset  # noqa: E402


def _seeded_plain_forecast() -> torch.Tensor:
    torch.manual_seed(0)
    model = ConvLSTMForecaster(ModelConfig(hidden_channels=[4, 6]), 3, 2, forecast_steps=2, upstream_channels=3)
    g = torch.Generator().manual_seed(1)
    x, up = torch.randn(2, 3, 3, 5, 6, generator=g), torch.randn(2, 3, 3, 7, 9, generator=g)
    assert list(model.state_dict()) == [
        f"{s}.cells.{i}.gates.{p}" for s in ("upstream", "downstream") for i in (0, 1) for p in ("weight", "bias")
    ] + ["head.weight", "head.bias"]
    return model(x, up)


def test_default_model_is_the_plain_stacked_model_bit_for_bit():
    # Recorded from the stacked model before topology became configuration (commit 76f7114), same seeds.
    out = _seeded_plain_forecast().double()
    # Tolerance: float32 sums reorder with the thread count (pytest runs one thread); any real change is far larger.
    assert out.sum().item() == pytest.approx(37.12648828886449, abs=1e-6)
    assert out[0, 1, 1, 2, :3].tolist() == pytest.approx(
        [0.2877857983112335, 0.27944812178611755, 0.2867854833602905], abs=1e-7)


@pytest.mark.parametrize("model_type", sorted(PRESETS))
@pytest.mark.parametrize("fusion", ["bottleneck", "input"])
def test_every_preset_forecasts_odd_grids_with_upstream_and_trains(model_type, fusion):
    hidden = [4, 6, 8, 10] if "deep" in model_type else [4, 6]
    config = ModelConfig(**{**preset(model_type), "hidden_channels": hidden, "upstream_fusion": fusion,
                            "use_batch_norm": True})
    model = ConvLSTMForecaster(config, 3, 2, forecast_steps=3, upstream_channels=3)
    out = model(torch.randn(2, 4, 3, 9, 11), torch.randn(2, 4, 3, 16, 17))
    assert out.shape == (2, 3, 2, 9, 11)
    out.sum().backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if not n.endswith("gamma"))


def test_unet_levels_halve_the_grid_and_decode_with_skips():
    config = ModelConfig(**preset("deep"))
    config.hidden_channels = [4, 6, 8]
    model = ConvLSTMForecaster(config, 3, 1)
    state = model.downstream.init_state(torch.zeros(1, 3, 9, 12))
    assert [tuple(h.shape[-2:]) for h, _ in state] == [(9, 12), (4, 6), (2, 3)]
    assert [c.gates.in_channels for c in model.decoder.cells] == [8 + 6 + 6, 6 + 4 + 4]
    assert isinstance(model.downstream.cells[0].norm, torch.nn.GroupNorm)


def test_dual_stream_fuses_upstream_at_the_bottleneck_like_graphcast():
    model = ConvLSTMForecaster(ModelConfig(**preset("dual_stream")), 56, 1, upstream_channels=56)
    assert len(model.upstream.cells) == 1  # the levels below the bottleneck
    assert model.downstream.cells[1].gates.in_channels == 2 * 64 + 128  # [own, upstream] pooled + hidden
    assert model.decoder.cells[0].gates.in_channels == 128 + 64 + 64
    dropouts = [m for m in model.modules() if isinstance(m, torch.nn.Dropout2d)]
    assert [d.p for d in dropouts] == [0.2]  # bottleneck only
    x, up = torch.randn(1, 2, 56, 8, 8), torch.randn(1, 2, 56, 10, 14)
    model.eval()
    assert not torch.allclose(model(x, up), model(x, torch.zeros_like(up)))


def test_attention_starts_as_identity_and_dropout_follows_the_config():
    config = ModelConfig(topology="unet", hidden_channels=[4, 8], use_attention=True, dropout_rate=0.2,
                         use_spatial_dropout=False)
    model = ConvLSTMForecaster(config, 3, 1)
    attention = model.downstream.post[1][0]
    x = torch.randn(2, 8, 3, 4)
    assert torch.equal(attention(x), x)
    assert [type(m).__name__ for m in model.modules() if isinstance(m, torch.nn.Dropout)] == ["Dropout"] * 3
    rates = sorted(m.p for m in model.modules() if isinstance(m, torch.nn.Dropout))
    assert rates == pytest.approx([0.1, 0.2, 0.3])  # decoder 0.5x, encoder 1x, bottleneck 1.5x


def test_unet_refuses_a_single_level_and_a_grid_too_small():
    from data_io import ConfigError
    from model.convlstm import check_grid

    with pytest.raises(ConfigError, match="at least 2"):
        ConvLSTMForecaster(ModelConfig(topology="unet", hidden_channels=[4]), 3, 1)
    with pytest.raises(ConfigError, match="upstream box"):
        check_grid(ModelConfig(**preset("deep")), 6, 20, box="upstream")


def test_gate_norm_is_group_norm_in_value_and_gradient():
    """model/_norm's GroupNorm (on CUDA: statistics by torch.var_mean, PyTorch's backward kernel), run here on the
    CPU in float64: the values and the gradients of input, weight and bias are GroupNorm's (gradcheck)."""
    import torch.nn.functional as F

    from model._norm import _GroupNorm

    torch.manual_seed(0)
    x = torch.randn(3, 32, 5, 7, dtype=torch.float64, requires_grad=True)
    w = torch.randn(32, dtype=torch.float64, requires_grad=True)
    b = torch.randn(32, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(_GroupNorm.apply(x, w, b, 8, 1e-5), F.group_norm(x, 8, w, b, 1e-5))
    assert torch.autograd.gradcheck(lambda *t: _GroupNorm.apply(*t, 8, 1e-5), (x, w, b))
