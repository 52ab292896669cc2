"""CUDA-only paths: CUDA graphs (torch.compile mode reduce-overhead) and the fused optimizer.

Skipped without a GPU; on a GPU machine: python -m pytest -m gpu
"""

import numpy as np
import pytest
import torch

from data_io import DataConfig, prepare
from model import Config, ModelConfig, TrainConfig
from model.trainer import fit

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from data_io.demo import write_demo

    return prepare(DataConfig(data=str(write_demo(tmp_path_factory.mktemp("cuda") / "demo.nc", seed=2, days=40,
                                                   resolution=5.0)), include_upstream=True))


@pytest.mark.parametrize("accumulation", [1, 3])
def test_cuda_graph_training_follows_eager_training(data, tmp_path, accumulation):
    """Accumulation runs several forwards per optimizer step: each must be its own CUDA-graph step."""
    def run(compile_model: bool) -> list:
        train = TrainConfig(output_dir=str(tmp_path / str(compile_model)), num_epochs=2, num_workers=0, batch_size=4,
                            gradient_accumulation_steps=accumulation, seed=1, learning_rate=1e-3, use_amp=False,
                            device="cuda", compile=compile_model, compile_mode="reduce-overhead", checkpoint_every=0)
        history = fit(Config(data=data.config, model=ModelConfig(hidden_channels=[8]), train=train), data)
        return [(r.train_loss, r.val_loss) for r in history]

    np.testing.assert_allclose(run(True), run(False), rtol=2e-3)


@pytest.mark.parametrize("accumulation,use_amp", [(1, False), (3, False), (2, True)])
def test_graphed_eager_steps_follow_eager_training(data, tmp_path, accumulation, use_amp):
    """The default CUDA path (eager steps replayed as CUDA graphs) against --no-cuda-graphs: same loss curves.

    batch 6 leaves a smaller last batch each epoch (its own graph); some targets are NaN (masked) and the upstream
    stream is on.
    """
    import dataclasses

    targets = data.targets.copy()
    targets[::7, :, :2] = np.nan
    gappy = dataclasses.replace(data, targets=targets)

    def run(graphs: bool) -> list:
        train = TrainConfig(output_dir=str(tmp_path / str(graphs)), num_epochs=3, num_workers=0, batch_size=6,
                            gradient_accumulation_steps=accumulation, seed=1, learning_rate=1e-3, use_amp=use_amp,
                            device="cuda", cuda_graphs=graphs, checkpoint_every=0)
        history = fit(Config(data=data.config, model=ModelConfig(hidden_channels=[8, 8]), train=train), gappy)
        return [(r.train_loss, r.val_loss, r.val_rmse) for r in history]

    assert len(data.starts("train")) % 6, "the test needs a partial last batch"
    np.testing.assert_allclose(run(True), run(False), rtol=1e-4 if not use_amp else 2e-3)


@pytest.mark.parametrize("overrides", [
    dict(model_type="dual_stream", hidden_channels=[8, 16], dropout_rate=0.0),
    dict(model_type="shallow", hidden_channels=[8, 16], use_batch_norm=True),
    dict(model_type="dual_stream", hidden_channels=[8, 16], upstream_fusion="input", use_attention=False),
], ids=["dual_stream", "shallow+batchnorm", "unet-input-fusion"])
def test_graphed_steps_follow_eager_training_for_the_graphcast_variants(data, tmp_path, overrides):
    """U-Net levels, GroupNorm, BatchNorm, bottleneck attention, both upstream fusions: graphed == eager (bf16)."""
    from model._presets import preset

    model = ModelConfig(**{**preset(overrides["model_type"]), **overrides})

    def run(graphs: bool) -> list:
        train = TrainConfig(output_dir=str(tmp_path / str(graphs)), num_epochs=2, num_workers=0, batch_size=6,
                            gradient_accumulation_steps=2, seed=1, learning_rate=1e-3, device="cuda",
                            cuda_graphs=graphs, checkpoint_every=0)
        return [(r.train_loss, r.val_loss) for r in fit(Config(data=data.config, model=model, train=train), data)]

    np.testing.assert_allclose(run(True), run(False), rtol=2e-3)


@pytest.mark.parametrize("overrides", [
    dict(model_type="dual_stream", hidden_channels=[8, 16], dropout_rate=0.0),
    dict(model_type="shallow", hidden_channels=[8, 16], use_batch_norm=True),
], ids=["dual_stream", "shallow+batchnorm"])
def test_compiled_training_follows_eager_training_for_the_graphcast_variants(data, tmp_path, overrides):
    """--compile (reduce-overhead: inductor kernels inside torch's own CUDA graphs) on the U-Net variants, with
    GroupNorm, attention and BatchNorm, against the eager path: same loss curves (bf16)."""
    from model._presets import preset

    model = ModelConfig(**{**preset(overrides["model_type"]), **overrides})

    def run(compile_model: bool) -> list:
        train = TrainConfig(output_dir=str(tmp_path / str(compile_model)), num_epochs=2, num_workers=0, batch_size=6,
                            gradient_accumulation_steps=2, seed=1, learning_rate=1e-3, device="cuda",
                            compile=compile_model, cuda_graphs=False, checkpoint_every=0)
        return [(r.train_loss, r.val_loss) for r in fit(Config(data=data.config, model=model, train=train), data)]

    np.testing.assert_allclose(run(True), run(False), rtol=5e-3)
