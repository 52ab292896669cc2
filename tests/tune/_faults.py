"""Fault injection inside Ray workers, installed by the shared Ray instance's worker_process_setup_hook.

install() wraps ConvLSTMForecaster.forward so that a model whose summed hidden widths exceed a threshold raises
the error CUDA raises when it runs out of memory ("oom_above_hidden"; "oom_above_batch": a forward of more than
that many samples, so that half the batch fits; "oom_from_epoch": from that epoch on), or a plain bug
("bug_above_hidden"); a
model whose summed widths are listed in "nan_widths" / "inf_widths" returns NaN / inf from epoch
"nonfinite_from_epoch" (default 1) on, so its loss stops being finite. It also wraps the trainer and torch.save:
- "epoch_sleep_s": each training epoch starts with this sleep, so a test can catch a search at a given moment;
- "die_at_epoch" + "die_marker": the worker SIGKILLs itself when epoch N starts, once (the marker file records
  it, with the pid), as if the OOM killer or an operator had killed it; with "die_after_forwards": K it dies in
  the K-th training forward pass of epoch N instead, mid-epoch;
- "save_delay_s" + "save_marker": a checkpoint write (torch.save to a *.tmp file) writes half its bytes, touches
  the marker, and sleeps before writing the rest: a kill in that window leaves a truncated temp file
  ("save_delay_from_epoch": only from that epoch on).
The faults are read from the JSON file named by $CONVLSTM_TEST_FAULTS ({"oom_above_hidden": 32}; {} injects
nothing) at every call, so each test sets its own faults by rewriting the file, with no new workers.
The same install() runs outside Ray too (tests/reliability/train_with_faults.py).
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.util
import io
import json
import os
import signal
import sys
import time
from pathlib import Path

FAULTS_ENV = "CONVLSTM_TEST_FAULTS"


def read_faults() -> dict:
    path = os.environ.get(FAULTS_ENV)
    if not path or not Path(path).is_file():
        return {}
    return json.loads(Path(path).read_text() or "{}")


def write_faults(path: Path, **faults) -> None:
    Path(path).write_text(json.dumps(faults))


def install() -> None:
    """Install the faults once model.trainer is imported (now, if it is). Why not at once: this runs in every worker
    of the tests' Ray, and most of them (idle workers, Ray Train's helper actors, the data store) never train;
    importing torch and the model in each costs 3-4 s of CPU on 2 cores (the DDP test: 87 s -> 53 s, BENCHMARKS §8)."""
    if "model.trainer" in sys.modules:
        _install_now()
    elif not any(isinstance(f, _AfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport("model.trainer", _install_now))


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs `then()` right after module `name` has been executed, the first time anything imports it."""

    def __init__(self, name: str, then) -> None:
        self.name, self.then = name, then

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)  # find the real spec below without finding ourselves again
        spec = importlib.util.find_spec(fullname)
        exec_module, then = spec.loader.exec_module, self.then

        def exec_then(module) -> None:
            exec_module(module)
            then()

        spec.loader.exec_module = exec_then
        return spec


def _install_now() -> None:
    import torch

    from model.convlstm import ConvLSTMForecaster

    original = ConvLSTMForecaster.forward
    if getattr(original, "injected_by_tests", False):
        return

    @functools.wraps(original)
    def forward(self, *args, **kwargs):
        faults = read_faults()
        width = sum(cell.hidden for cell in self.downstream.cells)
        limit = faults.get("oom_above_hidden")
        if limit is not None and width > limit:
            raise torch.OutOfMemoryError(
                f"CUDA out of memory. Tried to allocate {width} MiB (injected by tests: hidden {width} > {limit})"
            )
        limit = faults.get("oom_above_batch")
        batch = (args[0] if args else kwargs["x"]).shape[0]
        if limit is not None and batch > limit and _epoch[0] >= faults.get("oom_from_epoch", 0):
            raise torch.OutOfMemoryError(
                f"CUDA out of memory. Tried to allocate {batch} MiB (injected by tests: batch {batch} > {limit})"
            )
        limit = faults.get("bug_above_hidden")
        if limit is not None and width > limit:
            raise ValueError(f"a bug in the model (injected by tests: hidden {width} > {limit})")
        after, marker = faults.get("die_after_forwards"), faults.get("die_marker")
        if after and self.training and faults.get("die_at_epoch") == _epoch[0]:
            _forwards[0] += 1
            if _forwards[0] >= after and marker and _first_to_create(marker):
                os.kill(os.getpid(), signal.SIGKILL)
        out = original(self, *args, **kwargs)
        if _epoch[0] >= faults.get("nonfinite_from_epoch", 1):
            if width in faults.get("nan_widths", ()):
                out = out * float("nan")
            elif width in faults.get("inf_widths", ()):
                out = out + float("inf")
        return out

    forward.injected_by_tests = True
    ConvLSTMForecaster.forward = forward
    _install_trainer_faults()


_epoch = [0]  # the epoch the trainer in this process is in
_forwards = [0]  # training forward passes so far in that epoch


def _first_to_create(marker: str) -> bool:
    """True for the one process that creates the marker file (with its pid); False for every other."""
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    return True


def _install_trainer_faults() -> None:
    import torch

    from model.trainer import Trainer

    train_epoch = Trainer.train_epoch

    @functools.wraps(train_epoch)
    def faulty_train_epoch(self, epoch: int):
        faults = read_faults()
        _epoch[0], _forwards[0] = epoch, 0
        time.sleep(float(faults.get("epoch_sleep_s", 0)))
        marker = faults.get("die_marker")
        mid_epoch = faults.get("die_after_forwards")
        if faults.get("die_at_epoch") == epoch and marker and not mid_epoch and _first_to_create(marker):
            os.kill(os.getpid(), signal.SIGKILL)
        return train_epoch(self, epoch)

    Trainer.train_epoch = faulty_train_epoch
    save = torch.save

    @functools.wraps(save)
    def slow_save(obj, f, *args, **kwargs):
        faults = read_faults()
        delay, marker = faults.get("save_delay_s"), faults.get("save_marker")
        delay = delay if _epoch[0] >= faults.get("save_delay_from_epoch", 1) else 0
        name = os.readlink(f"/proc/self/fd/{f.fileno()}") if hasattr(f, "fileno") else str(f)
        if not delay or not name.endswith(".tmp"):  # save_atomic writes through an fd: its name is a number
            return save(obj, f, *args, **kwargs)
        buffer = io.BytesIO()
        save(obj, buffer, *args, **kwargs)
        data = buffer.getvalue()
        f.write(data[: len(data) // 2])
        f.flush()
        if marker:
            Path(marker).write_text(f"{os.getpid()} {name}")
        time.sleep(float(delay))
        f.write(data[len(data) // 2 :])

    torch.save = slow_save
