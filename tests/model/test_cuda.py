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


@pytest.mark.parametrize("batch_norm,graphs", [(False, 1), (True, 2)])
def test_the_partial_last_batch_replays_the_full_batchs_graph(data, tmp_path, batch_norm, graphs):
    """Padded (model/batches.pad_batch), the epoch's last, smaller batch needs no second training graph, and so no
    second eager warm-up beside the first graph's pool; BatchNorm, which mixes samples, keeps a graph of its own."""
    from model.trainer import Trainer

    train = TrainConfig(output_dir=str(tmp_path), num_epochs=3, num_workers=0, batch_size=4, device="cuda",
                        checkpoint_every=0)
    config = Config(data=data.config, model=ModelConfig(hidden_channels=[8], use_batch_norm=batch_norm), train=train)
    assert len(data.starts("train")) % 4 and len(data.starts("val")) % 4, "the test needs partial last batches"
    trainer = Trainer(config, data, torch.device("cuda"))
    trainer.run()
    assert len(trainer._train_graphs.graphs) == graphs
    assert len(trainer._eval_graphs.graphs) == 1


def _laid_out(t: torch.Tensor, layout: str) -> torch.Tensor:
    """`t` in one of the layouts the kernels meet: dense, or a channel slice of a larger tensor, either format; or
    one with no unit stride in common with the others (every other x), which takes the strided kernels."""
    fmt = torch.channels_last if layout.startswith("channels-last") else torch.contiguous_format
    if layout.endswith("slice"):
        wider = torch.cat([torch.randn_like(t[:, :3]), t, torch.randn_like(t[:, :2])], dim=1)
        return wider.contiguous(memory_format=fmt)[:, 3:3 + t.shape[1]]
    if layout == "strided":
        return torch.stack([t, torch.randn_like(t)], dim=-1).flatten(-2)[..., ::2]
    return t.contiguous(memory_format=fmt)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("layout", ["nchw", "channels-last", "nchw slice", "channels-last slice", "strided"])
def test_fused_gate_kernels_match_the_element_wise_ops(dtype, layout):
    """model/_gates.py's Triton kernels against PyTorch's ops: h, c' and the gradients of the gates, the old state and
    the bias (which the kernels add, and whose gradient they sum atomically per tile), with and without a bias, with
    gradients flowing into h only, into c' only, into both, and into h through a concatenation (so that the gradient
    reaching the kernel is a channel slice of a larger tensor, as a ConvLSTM's next step hands it)."""
    from model._gates import fused_available, lstm_gates

    if not fused_available():
        pytest.skip("Triton is not installed")
    torch.manual_seed(0)
    gates = _laid_out((3 * torch.randn(3, 4 * 5, 7, 9, device="cuda")).to(dtype), layout)
    c = _laid_out(torch.randn(3, 5, 7, 9, device="cuda"), layout)
    weight = _laid_out(torch.randn(3, 7, 7, 9, device="cuda"), layout.removesuffix(" slice"))
    # bf16: the element-wise ops round every intermediate to bf16, the kernels compute in fp32 and round once
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-2, atol=4e-2)
    for bias in (None, torch.randn(4 * 5, device="cuda")):
        for into in ("h", "c", "both", "cat"):
            results = []
            for fused in (True, False):
                g, c0 = gates.detach().requires_grad_(), c.detach().requires_grad_()
                b = None if bias is None else bias.detach().requires_grad_()
                h, c1 = lstm_gates(g, c0, fused=fused, bias=b)
                if into == "cat":
                    loss = (torch.cat([torch.zeros_like(h[:, :2]), h], dim=1).float() * weight).sum()
                else:
                    loss = (h.float() * 1.3).sum() * (into != "c") + (c1.float() ** 2).sum() * (into != "h")
                loss.backward()
                results.append((h.float(), c1.float(), g.grad.float(), c0.grad.float(),
                                *(() if b is None else (b.grad,))))
            for got, want in zip(*results, strict=True):
                # the bias gradient sums 189 of the gates' gradients: bf16 ops round each, the kernels none
                torch.testing.assert_close(got, want, **(tol if got.dim() > 1 or dtype == torch.float32
                                                        else dict(rtol=2e-2, atol=0.3)))


def _loss_curves(data, out, model_type: str, **train) -> list:
    """(train, val) loss per epoch of a small fp32 CUDA run of `model_type` (the default graphed, fused path)."""
    from model._presets import preset

    model = ModelConfig(**{**preset(model_type), "hidden_channels": [8, 16], "dropout_rate": 0.0})
    config = TrainConfig(output_dir=str(out), num_epochs=3, num_workers=0, batch_size=6, seed=1, learning_rate=1e-3,
                         use_amp=False, device="cuda", checkpoint_every=0, **train)
    return [(r.train_loss, r.val_loss) for r in fit(Config(data=data.config, model=model, train=config), data)]


@pytest.mark.parametrize("model_type", ["stacked", "dual_stream"])
def test_channels_last_training_follows_the_default_layout(data, tmp_path, model_type):
    """--channels-last (frames, states, weights and the gate kernels' channels-last tiles) against the default
    layout: the same loss curves. cuDNN runs other kernels for each layout, and by default lets fp32 convolutions
    use TF32 (curves 1e-4 to 9e-4 apart, measured): off here, so that only the kernels' summation order differs."""
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        np.testing.assert_allclose(_loss_curves(data, tmp_path / "cl", model_type, channels_last=True),
                                   _loss_curves(data, tmp_path / "nchw", model_type, channels_last=False), rtol=5e-4)
    finally:
        torch.backends.cudnn.allow_tf32 = tf32


@pytest.mark.parametrize("model_type", ["stacked", "dual_stream"])
def test_training_with_fused_gates_follows_the_element_wise_ops(data, tmp_path, model_type):
    """--no-fused-gates against the default: the same loss curves (fp32, so only summation order differs)."""
    np.testing.assert_allclose(_loss_curves(data, tmp_path / "fused", model_type, fused_gates=True),
                               _loss_curves(data, tmp_path / "ops", model_type, fused_gates=False), rtol=1e-4)


@pytest.mark.parametrize("use_amp", [False, True])
def test_gate_norm_matches_pytorchs_group_norm_on_cuda(use_amp):
    """model/_norm.GateNorm (statistics by torch.var_mean, PyTorch's GroupNorm backward) against nn.GroupNorm, as the
    cells use it: graphcast's batch of 4, 16 groups of 256 gate channels, bf16 convolution output under autocast."""
    from model._norm import GateNorm

    torch.manual_seed(0)
    ours, theirs = GateNorm(16, 256).cuda(), torch.nn.GroupNorm(16, 256).cuda()
    with torch.no_grad():
        for p in (ours.weight, ours.bias):
            p.normal_()
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(4, 256, 61, 61, device="cuda", dtype=torch.bfloat16 if use_amp else torch.float32)
    grad = torch.randn(4, 256, 61, 61, device="cuda")
    results = []
    for norm in (ours, theirs):
        xi = x.clone().requires_grad_()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
            y = norm(xi)
        y.backward(grad)
        results.append((y, norm.weight.grad, norm.bias.grad, xi.grad))
    assert results[0][0].dtype == results[1][0].dtype == torch.float32
    for a, b in zip(results[0][:3], results[1][:3]):  # fp32 either way
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    # The input's gradient is stored in the input's dtype: in bf16, 15 of 3.8 million elements differed by one
    # rounding step (2**-7 near 1) on an H100, from fp32 statistics summed in another order; bf16's own tolerance.
    torch.testing.assert_close(results[0][3], results[1][3])
