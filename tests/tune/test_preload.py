"""A Ray instance the search starts preloads what a trial imports into every worker, pre-started ones included, so a
cold trial's actor starts with torch, ray.tune, the project and torch._dynamo already imported (tune/_preload.py).
Its own Ray instance, in a fresh process: the session's shared instance has a runtime_env (fault injection)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

from tests.conftest import ROOT

SCRIPT = """
import os, sys, tempfile
from pathlib import Path
import ray
from tune import _runner

assert _runner._connect(None, Path(tempfile.mkdtemp()))

@ray.remote(num_cpus=1)
class Probe:  # references nothing of the project: whatever it finds imported, the worker imported as it started
    def modules(self):
        import torch
        found = [m for m in ("tune.trainable", "torch._dynamo", "data_io") if m in sys.modules]
        return found, torch.cuda.is_initialized()

print("PRELOADED", ray.get(Probe.remote().modules.remote()))
ray.shutdown()
"""


def test_a_ray_instance_the_search_starts_preloads_the_trial_modules_into_its_workers(tmp_path):
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_TMPDIR": ray_tmp}
    env.pop("RAY_ADDRESS", None)
    try:
        out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=180)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "PRELOADED (['tune.trainable', 'torch._dynamo', 'data_io'], False)" in out.stdout, out.stdout[-2000:]
