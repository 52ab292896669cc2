"""CUDA graphs for eager steps: each input shape's step is captured once, then replayed.

Why: at the sizes a search trial runs, one ConvLSTM step is hundreds of small kernels and the GPU waits on the
CPU launching them (about 8 ms a step at batch 2 on the 8x8 demo box). A captured graph launches them in one call.
torch.compile's CUDA graphs do the same after a compile that can outlast a whole trial; this needs none.

Exactness: a captured step runs the same kernels on the same data as the eager step; nothing is skipped. The first
`warmup` calls of every shape run eagerly (on a side stream, so lazy initialisation happens outside a capture) and
are real steps, so the run's trajectory is the eager one. Each new shape gets its own graph (the trainer pads the
epoch's last, smaller batch to the full one, so it replays the same graph). Gradients accumulate into `.grad`
tensors that must already exist and are zeroed in place.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import torch

Key = tuple


@dataclass
class _Captured:
    graph: torch.cuda.CUDAGraph
    inputs: list[torch.Tensor | None]
    outputs: object


class StepGraphs:
    """Call `fn(*tensors)` through a CUDA graph per distinct (shape, dtype) of its tensor arguments.

    `fn` must not synchronise with the host (no .item(), no data-dependent Python branches) and must only write
    into tensors it returns or into tensors that live as long as this object (parameters, `.grad`, optimizer
    state). The returned tensors are the graph's own memory: read them before the next call.
    """

    def __init__(self, fn: Callable[..., object], warmup: int = 2) -> None:
        self.fn, self.warmup = fn, warmup
        self.graphs: dict[Key, _Captured] = {}
        self.calls: Counter[Key] = Counter()
        # One pool for every shape: their replays never overlap, and the outputs each holds stay allocated.
        self.pool = torch.cuda.graph_pool_handle()
        self.side = torch.cuda.Stream()

    def __call__(self, *args: torch.Tensor | None) -> object:
        key = tuple(None if a is None else (tuple(a.shape), a.dtype) for a in args)
        captured = self.graphs.get(key)
        if captured is None:
            self.calls[key] += 1
            if self.calls[key] <= self.warmup:
                return self._eager(args)
            captured = self.graphs[key] = self._capture(args)
        else:
            for static, a in zip(captured.inputs, args):
                if a is not None:
                    static.copy_(a, non_blocking=True)
        captured.graph.replay()
        return captured.outputs

    def _eager(self, args: tuple) -> object:
        self.side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.side):
            out = self.fn(*args)
        torch.cuda.current_stream().wait_stream(self.side)
        return out

    def _capture(self, args: tuple) -> _Captured:
        # The static inputs already hold this call's data; the capture itself runs nothing, the replay after it does.
        inputs = [None if a is None else a.detach().clone() for a in args]
        graph = torch.cuda.CUDAGraph()
        torch.cuda.current_stream().synchronize()
        # The eager warm-ups' freed blocks stay cached on their stream, where the graph's private pool cannot use
        # them: handed back first, they do not sit beside the pool for the rest of the run.
        torch.cuda.empty_cache()
        with torch.cuda.graph(graph, pool=self.pool, stream=self.side):
            outputs = self.fn(*inputs)
        return _Captured(graph, inputs, outputs)
