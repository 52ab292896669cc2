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
