"""What every worker of a Ray instance that the search starts imports as the worker starts (Ray's
preload_python_modules, set in tune/_runner._connect).

Why: Ray hands a new trial actor one of its pre-started idle workers; with this, that worker has torch, ray.tune,
this project and torch._dynamo (which torch.optim imports inside a trial's first optimizer) imported already, and
Triton's hash of its own install (0.6 s, once per process, before the first kernel launch) computed, so a cold trial
no longer pays for them after Tune starts it (BENCHMARKS §8, target 5). Nothing here touches CUDA: Ray sets a
worker's CUDA_VISIBLE_DEVICES when it gives it a trial, and CUDA reads it once, at its first use
(tests/tune/test_preload_gpu.py checks that on a GPU).
"""

import importlib


def _triton_key() -> None:
    for module in ("triton.runtime.cache", "triton.compiler.compiler"):  # where Triton 3.x keeps it, newest first
        try:
            key = getattr(importlib.import_module(module), "triton_key", None)
        except ImportError:
            continue
        if key is not None:
            key()  # lru_cached: the trial's first launch finds it
            return


for _name in ("tune.trainable", "torch._dynamo"):
    try:
        importlib.import_module(_name)
    except Exception:  # a worker that cannot preload still serves: the trial's own import raises and says why
        pass
try:
    import torch

    if torch.version.cuda:  # a CUDA build: Triton comes with it
        _triton_key()
except Exception:
    pass
