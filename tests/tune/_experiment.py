"""One small real search, run once per test session and shared by test_report.py and test_retrain.py.

Import the fixture into a test module with `from tests.tune._experiment import experiment`. The folder is
shared: copy it (shutil.copytree) before changing anything in it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from data_io.demo import make_demo

ROOT = Path(__file__).resolve().parents[2]
_BUILT: dict[str, Path] = {}  # one search per session, even though two modules import the fixture


@pytest.fixture(scope="session")
def experiment(tmp_path_factory) -> Path:
    """STORAGE/x of `python -m tune.search`: 3 trials of 2 epochs (all run to the end), 2 forecast steps, CPU."""
    if "x" not in _BUILT:
        base = tmp_path_factory.mktemp("search")
        data = base / "small.nc"
        make_demo(seed=0, days=60, resolution=5.0).to_netcdf(data)
        ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay short
        # Its own Ray (not a session's RAY_ADDRESS), no fault injection from other tests, no GPU.
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "CONVLSTM_TEST_FAULTS")}
        env.update(RAY_TMPDIR=ray_tmp, CUDA_VISIBLE_DEVICES="")
        args = ["--data", data, "--num-samples", "3", "--max-epochs", "2", "--grace-epochs", "2",
                "--forecast-steps", "2", "--baseline", "none", "--storage-path", base, "--name", "x",
                "--cpus-per-trial", "1"]
        try:
            proc = subprocess.run([sys.executable, "-m", "tune.search", *map(str, args)], cwd=ROOT, env=env,
                                  capture_output=True, text=True, timeout=300)
        finally:
            shutil.rmtree(ray_tmp, ignore_errors=True)
        assert proc.returncode == 0, f"tune.search failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        _BUILT["x"] = base / "x"
    return _BUILT["x"]
