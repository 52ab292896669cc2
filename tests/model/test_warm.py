"""model/warm.py: the first Trainer's one-off costs begun ahead in a thread, in a fresh process as a trial has it."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import ROOT

FRESH = """
import sys, threading, tempfile
import torch
from data_io import DataConfig, prepare
from model import Config, warm
from model.trainer import Trainer

assert "torch._dynamo" not in sys.modules  # what a fresh trial process starts with
config = Config()
config.data = DataConfig(data=sys.argv[1], window_size=2, forecast_steps=1)
config.model.hidden_channels = [4]
warm.start(config, torch.device("cpu"))
warm.start(config, torch.device("cpu"))  # a second call (fit() after the trial's own) starts nothing more
names = [t.name for t in threading.enumerate() if t.name.startswith("convlstm-")]
data = prepare(config.data)
with tempfile.TemporaryDirectory() as out:
    config.train.output_dir, config.train.num_epochs = out, 1
    trainer = Trainer(config, data, torch.device("cpu"))
    # the constructor waited: the import is done and no warm-up thread runs beside the training
    assert "torch._dynamo" in sys.modules
    assert not [t for t in threading.enumerate() if t.name.startswith("convlstm-") and t.is_alive()]
    trainer.train_epoch(1)
print("WARM", sorted(set(names)))
"""


def test_the_warm_up_imports_dynamo_in_its_own_thread_once_and_the_trainer_waits_for_it(small_demo, tmp_path):
    path = tmp_path / "demo.nc"
    small_demo.to_netcdf(path)
    out = subprocess.run([sys.executable, "-c", FRESH, str(path)], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-2000:]
    # one import thread and one warm-up thread, however many times start() was called
    assert "WARM ['convlstm-import-dynamo', 'convlstm-warm-up']" in out.stdout, out.stdout
