"""One-off costs of a process's first training step, paid ahead in a thread of their own: torch._dynamo's import,
and on CUDA cuDNN's and cuBLAS's handles and Triton's kernels.

Why: a cold trial process spends seconds on these inside its first Trainer and its first step (BENCHMARKS §8,
target 5): torch.optim imports torch._dynamo lazily in the optimizer's constructor and step (1.4 s on a laptop CPU,
3.9 s on the H200 image, most of it sympy), and Triton hashes its own install, loads its driver and the kernels'
binaries on their first launch. `start()` begins them while the process still reads its data and builds its
model; `Trainer.__init__` calls `wait()` before anything it does could race them (a CUDA graph capture must not see
another thread's launches).
"""

from __future__ import annotations

import importlib
import threading

import torch

from model._gates import fused_available, lstm_gates
from model.config import Config
from model.device import amp_dtype

_import: threading.Thread | None = None
_warm: threading.Thread | None = None
_lock = threading.Lock()


def import_ahead() -> None:
    """Begin torch._dynamo's import (once per process). In a thread of its own also for the import's sake: a module
    imported along the way may keep a failed optional import's exception, whose traceback's frames would keep the
    caller's stack alive for the life of the process. On the H200 image cupyx loads optuna, which keeps redis's
    ImportError: the process's first Trainer stayed alive with its data and model on the GPU (621 MB at 0.25 deg,
    BENCHMARKS §11). A new thread's stack holds nothing of ours."""
    global _import
    with _lock:
        if _import is None:
            _import = threading.Thread(target=_import_dynamo, name="convlstm-import-dynamo", daemon=True)
            _import.start()


def start(config: Config, device: torch.device) -> None:
    """Begin the import and, on CUDA, warm_up() for `config` on `device` (once per process)."""
    global _warm
    import_ahead()
    with _lock:
        if _warm is None:
            _warm = threading.Thread(target=_run, args=(config, device), name="convlstm-warm-up", daemon=True)
            _warm.start()


def wait() -> None:
    """Block until what start() or import_ahead() began is done; without either, import here (in a thread)."""
    import_ahead()
    _import.join()
    if _warm is not None:
        _warm.join()


def _run(config: Config, device: torch.device) -> None:
    _import.join()
    try:
        warm_up(config, device)
    except Exception:  # a warm-up is an optimisation: the trainer meets (and reports) any real failure itself
        pass


def _import_dynamo() -> None:
    try:
        importlib.import_module("torch._dynamo")
    except Exception:  # not kept: its traceback is what the thread avoids; the optimizer's own import raises it
        pass


def warm_up(config: Config, device: torch.device) -> None:
    """Run one tiny convolution, forward and backward, in the dtype the trainer will use, and the fused gate kernels
    where the trainer will run them. Changes no state the trainer reads (no RNG draw: the inputs are constants)."""
    if device.type != "cuda":
        return
    dtype = amp_dtype(device, config.train.use_amp)
    x = torch.ones(2, 8, 8, 8, device=device, requires_grad=True)
    w = torch.full((16, 8, 3, 3), 0.01, device=device, requires_grad=True)
    with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
        gates = torch.nn.functional.conv2d(x, w, padding=1)
        c = torch.zeros(2, 4, 8, 8, device=device)
        h, c = lstm_gates(gates, c, fused=config.train.fused_gates and fused_available())
        loss = (h.float() * torch.ones_like(h, dtype=torch.float32)).sum() + c.sum()
    loss.backward()
    torch.cuda.synchronize(device)
