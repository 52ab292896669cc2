"""On a GPU: what a worker preloads (tune/_preload.py) leaves CUDA uninitialised, so the CUDA_VISIBLE_DEVICES that Ray
sets when it hands the worker a trial still decides which GPU the trial gets. CUDA reads that variable once, at its
first initialisation: a process that preloads, then hides every GPU, must find none."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

PRELOAD_THEN_HIDE = """
import os, sys
import tune._preload, torch
assert "tune.trainable" in sys.modules and "torch._dynamo" in sys.modules
os.environ["CUDA_VISIBLE_DEVICES"] = ""
print("GPUS", torch._C._cuda_getDeviceCount())
"""


def _gpus_seen(script: str) -> int:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return int(out.stdout.split("GPUS")[-1])


def test_the_preload_leaves_cuda_alone_so_rays_gpu_assignment_still_holds():
    assert _gpus_seen(PRELOAD_THEN_HIDE) == 0


def test_the_check_itself_tells_a_process_whose_cuda_started_before_the_gpus_were_hidden():
    hide = 'os.environ["CUDA_VISIBLE_DEVICES"] = ""'
    started_first = PRELOAD_THEN_HIDE.replace(hide, f"torch._C._cuda_getDeviceCount(); {hide}")
    assert _gpus_seen(started_first) == torch.cuda.device_count()
