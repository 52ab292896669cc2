"""What every worker of a Ray instance that the search starts imports as the worker starts (Ray's
preload_python_modules, set in tune/_runner._connect).

Why: Ray hands a new trial actor one of its pre-started idle workers; with this, that worker has torch, ray.tune,
this project and torch._dynamo (which torch.optim imports inside a trial's first optimizer) imported already, so a
cold trial no longer pays for them after Tune starts it (BENCHMARKS §8, target 5). Nothing here touches CUDA: Ray
sets a worker's CUDA_VISIBLE_DEVICES when it gives it a trial, and CUDA reads it once, at its first use.
"""

import importlib

for _name in ("tune.trainable", "torch._dynamo"):
    try:
        importlib.import_module(_name)
    except Exception:  # a worker that cannot preload still serves: the trial's own import raises and says why
        pass
