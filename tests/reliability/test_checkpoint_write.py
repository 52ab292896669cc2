"""A training process SIGKILLed in the middle of a checkpoint write: the previous checkpoint still loads and
`--resume` continues from it.

tests/tune/_faults.py holds the write of epoch 2's last.pt half done (half its bytes in the temp file) long
enough for the test to kill the process there.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from data_io import ConfigError
from model.checkpoint import load
from tests.conftest import ROOT
from tests.tune._faults import FAULTS_ENV

ARGS = ["--num-epochs", "3", "--num-workers", "0", "--hidden-channels", "4", "--checkpoint-every", "0"]
# Tiny tensors: on a busy 2-core machine OpenMP threads waiting on each other make epochs 100x slower.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    for name, value in ONE_THREAD.items():
        monkeypatch.setenv(name, value)


@pytest.fixture(scope="module")
def killed_mid_write(tmp_path_factory):
    """Train 3 epochs and SIGKILL the process while it writes epoch 2's last.pt. Returns the output folder.

    One run for the module: the tests read it in file order, and the last one resumes it.
    """
    from data_io.demo import write_demo

    tmp_path = tmp_path_factory.mktemp("killed_mid_write")
    demo_file = write_demo(tmp_path / "demo.nc", seed=0, days=60, resolution=5.0)
    marker, faults = tmp_path / "saving", tmp_path / "faults.json"
    faults.write_text(json.dumps({"save_delay_s": 60, "save_marker": str(marker), "save_delay_from_epoch": 2}))
    out = tmp_path / "run"
    env = {**os.environ, FAULTS_ENV: str(faults), "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT), **ONE_THREAD}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.reliability.train_with_faults", "--data", demo_file, "--output-dir", out, *ARGS],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not marker.is_file():
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "the checkpoint write was never reached"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return out


def test_kill_during_a_checkpoint_write_leaves_the_previous_checkpoint_loadable(killed_mid_write):
    out = killed_mid_write
    (partial,) = out.glob(".last.pt.*.tmp")  # the write that was cut off, never renamed into place
    with pytest.raises(ConfigError, match="not a readable checkpoint"):
        load(partial)
    last = load(out / "last.pt")
    assert last["epoch"] == 1 and [r["epoch"] for r in last["history"]] == [1]
    assert load(out / "best.pt")["epoch"] == 1


def test_resume_from_the_cut_off_temp_file_is_one_line_and_exit_2(run_script, killed_mid_write):
    (partial,) = killed_mid_write.glob(".last.pt.*.tmp")
    proc = run_script("--data", killed_mid_write.parent / "demo.nc", "--output-dir", killed_mid_write,
                      "--resume", partial, *ARGS)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert f"{partial}: not a readable checkpoint" in line


def test_resume_after_a_kill_during_a_checkpoint_write_trains_the_remaining_epochs(run_script, killed_mid_write):
    out = killed_mid_write
    proc = run_script("--data", out.parent / "demo.nc", "--output-dir", out, "--resume", out / "last.pt", *ARGS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "at epoch 1" in proc.stdout
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert load(out / "last.pt")["epoch"] == 3
