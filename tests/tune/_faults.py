"""Fault injection inside Ray workers, installed by the shared Ray instance's worker_process_setup_hook.

install() wraps ConvLSTMForecaster.forward so that a model whose summed hidden widths exceed a threshold raises
the error CUDA raises when it runs out of memory ("oom_above_hidden"), or a plain bug ("bug_above_hidden"). The
thresholds are read at every forward from the JSON file named by $CONVLSTM_TEST_FAULTS ({"oom_above_hidden": 32};
{} injects nothing), so each test sets its own faults by rewriting the file, with no new workers.
"""

from __future__ import annotations

import functools
import json
import os
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
        limit = faults.get("bug_above_hidden")
        if limit is not None and width > limit:
            raise ValueError(f"a bug in the model (injected by tests: hidden {width} > {limit})")
        return original(self, *args, **kwargs)

    forward.injected_by_tests = True
    ConvLSTMForecaster.forward = forward
