"""OOM rescue on a real GPU: a memory cap between the peaks of batch b and b/2 makes b run out of memory for real.

Skipped without a GPU; on a GPU machine: python -m pytest -m gpu tests/tune/test_rescue_gpu.py
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data_io import DataConfig, prepare
from model import Config, ModelConfig, TrainConfig
from model.trainer import fit
from tune._rescue import fit_with_rescue

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def _config(data, tmp_path, name: str, batch: int, accumulation: int) -> Config:
    train = TrainConfig(output_dir=str(tmp_path / name), num_epochs=2, num_workers=0, batch_size=batch,
                        gradient_accumulation_steps=accumulation, seed=1, learning_rate=1e-3, use_amp=False,
                        device="cuda", checkpoint_every=0, data_on_device="off")
    return Config(data=data.config, model=ModelConfig(hidden_channels=[64, 64]), train=train)


def test_a_capped_gpu_rescues_batch_32_at_16_with_the_curve_of_a_direct_16_x_2_run(tmp_path):
    from data_io.demo import write_demo

    # 0.5 deg (a 31x31 box): activations dominate the step; at 2 deg the graphs' and the allocator's fixed costs
    # did (batch 32: 322 MB, 16 x 2: 291 MB) and no cap could separate the two.
    data = prepare(DataConfig(data=str(write_demo(tmp_path / "demo.nc", seed=2, days=40, resolution=0.5))))
    def reserved_peak(config) -> tuple[list, float]:
        # The cap (set_per_process_memory_fraction) bounds what the allocator reserves, not what it hands out.
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        history = fit(config, data)
        return history, torch.cuda.max_memory_reserved() / 2**20

    _, full = reserved_peak(_config(data, tmp_path, "full", 32, 1))
    direct, half = reserved_peak(_config(data, tmp_path, "direct", 16, 2))
    assert full > 1.3 * half, (full, half)  # activations dominate, so the cap below separates the two
    total_mb = torch.cuda.get_device_properties(0).total_memory / 2**20
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction((half + 0.6 * (full - half)) / total_mb)
    try:
        rescue: dict = {}
        history = fit_with_rescue(_config(data, tmp_path, "rescued", 32, 1), data, lambda *a: None,
                                  tmp_path / "trial", rescue)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    assert rescue == {"rescued_batch": 16, "rescued_accumulation": 2}
    assert "out of memory" in (tmp_path / "trial" / "rescue.json").read_text()
    np.testing.assert_allclose([(r.train_loss, r.val_loss) for r in history],
                               [(r.train_loss, r.val_loss) for r in direct], rtol=1e-5)
