"""How much memory a config needs to train: counted exactly on the meta device, measured by a one-step probe.

- `footprint(config, shape)`: what the training step holds, from the model itself rather than from a formula per
  variant: the model is built and run forward on the meta device (no memory, no data, milliseconds), and every
  tensor autograd saves for the backward is counted once (by storage). Weights, gradients and AdamW's two states
  come from the parameter count. Counted in fp32: autocast does not act on meta tensors, so the probe's calibration
  (tune/_preflight.py) carries the AMP ratio. The gate arithmetic is counted as the trial will run it (fused kernels
  on CUDA with Triton, element-wise ops elsewhere).
- `probe(config, shape, device)`: one real training micro-step (forward, loss, backward, optimizer step) on random
  data of that shape on the device; its peak reserved memory. What a calibration fits the footprints to.
  Reserved, not allocated: a share's memory cap bounds what the caching allocator reserves, and with CUDA graphs a
  captured step's intermediates stay reserved in the graph's pool between replays (BENCHMARKS §11).
- `trainer_probe(config, data, batch)`: the trainer's own first epoch on a few windows of the data, on CUDA: what a
  trial holds, CUDA graphs' private pools included (an eager step misses them: 1-2.5 GB a config, BENCHMARKS §11).
- `host_probe(config, shape, batch)`: the same step on the CPU; what it adds to the process's peak RSS (Linux).
"""

from __future__ import annotations

import copy
import ctypes
import dataclasses
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path

import torch

from data_io import PreparedData
from data_io.windows import window_span
from model._gates import fused_available
from model.build import model_from_config
from model.config import Config
from model.trainer import fit


@dataclass(frozen=True)
class DataShape:
    """What memory depends on in the data (the window comes from the config): channels and grids."""

    in_channels: int
    out_channels: int
    grid: tuple[int, int]
    upstream_grid: tuple[int, int] | None = None
    data_bytes: int = 0  # the prepared arrays, for a trial that keeps them on the GPU

    @classmethod
    def of(cls, data) -> DataShape:
        """From a PreparedData."""
        up = tuple(data.upstream.shape[-2:]) if data.upstream is not None else None
        return cls(in_channels=int(data.inputs.shape[1]),
                   out_channels=int(data.targets.shape[1]), grid=tuple(int(n) for n in data.inputs.shape[-2:]),
                   upstream_grid=None if up is None else tuple(int(n) for n in up), data_bytes=int(data.nbytes()))

    def key(self) -> str:
        up = "x".join(map(str, self.upstream_grid)) if self.upstream_grid else "none"
        return f"c{self.in_channels}-{self.out_channels}-{self.grid[0]}x{self.grid[1]}-up{up}"


@dataclass(frozen=True)
class Footprint:
    activations: int  # bytes autograd saves for the backward of one micro-batch (fp32 count)
    states: int  # bytes of weights + gradients + AdamW moments

    @property
    def total(self) -> int:
        return self.activations + self.states


def _inputs(config: Config, shape: DataShape, batch: int, device) -> tuple[torch.Tensor, torch.Tensor | None]:
    x = torch.randn(batch, config.data.window_size, shape.in_channels, *shape.grid, device=device)
    up = (torch.randn(batch, config.data.window_size, shape.in_channels, *shape.upstream_grid, device=device)
          if shape.upstream_grid else None)
    return x, up


def _model(config: Config, shape: DataShape, device) -> torch.nn.Module:
    return model_from_config(config, shape.in_channels, shape.out_channels,
                             upstream=shape.upstream_grid is not None).to(device)


def counts_fused(config: Config, device: str) -> bool:
    """Whether a trial of `config` on `device` ("cuda", "cpu") runs the fused gate kernels, as footprint(fused=)
    wants to know; ask on the trials' own machine (Triton may be installed there only)."""
    return device == "cuda" and config.train.fused_gates and fused_available()


def footprint(config: Config, shape: DataShape, batch: int | None = None, fused: bool = False) -> Footprint:
    """The training step's memory for `config` at `batch` (default config.train.batch_size), counted, not run.
    `fused`: count what the fused gate kernels save (model/_gates.py: the gates and the old cell state per cell step),
    as a trial runs them on CUDA with Triton; else what PyTorch's element-wise gate ops save."""
    batch = batch or config.train.batch_size
    with torch.device("meta"):
        config = copy.deepcopy(config)
        config.train.fused_gates = fused
        model = _model(config, shape, "meta")
        x, up = _inputs(config, shape, batch, "meta")
    weights = {p.untyped_storage()._cdata for p in model.parameters()}  # counted in states, not here
    # storage -> (the saved tensors on it, its bytes). A tensor saved by several ops (or as views) counts once; one
    # saved for a branch the backward never reaches (a step's output nothing reads) is freed with that branch, and
    # the storage address can then be reused: only storages whose saved tensors are alive at the end count.
    saved: dict[int, tuple[list[weakref.ref], int]] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        key = storage._cdata
        if key not in weights:
            entry = saved.get(key)
            if entry is None or not _alive(entry[0]):
                entry = saved[key] = ([], storage.nbytes())
            entry[0].append(weakref.ref(t))
        return t

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        pred = model(x, up)
        loss = (pred.float() ** 2).mean()  # the loss's own saved tensors: as large as the prediction
    activations = sum(nbytes for refs, nbytes in saved.values() if _alive(refs))
    del loss
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    return Footprint(activations=activations, states=4 * params)


def _alive(refs: list[weakref.ref]) -> bool:
    return any(r() is not None for r in refs)


def probe(config: Config, shape: DataShape, device: torch.device, batch: int | None = None) -> float:
    """Peak reserved MB of one training micro-step plus an optimizer step of `config` at `batch` on a CUDA
    device, with the config's AMP setting, on random data of `shape` (the data itself not on the device)."""
    from model.device import amp_dtype

    batch = batch or config.train.batch_size
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_reserved(device)
    model = _model(config, shape, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    dtype = amp_dtype(device, config.train.use_amp)
    try:
        x, up = _inputs(config, shape, batch, device)
        with torch.autocast(device.type, dtype=dtype) if dtype else torch.autocast(device.type, enabled=False):
            pred = model(x, up)
        (pred.float() ** 2).mean().backward()
        optimizer.step()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_reserved(device) - base) / 2**20
    finally:
        del model, optimizer
        torch.cuda.empty_cache()


def trainer_probe(config: Config, data: PreparedData, batch: int) -> float:
    """Peak reserved MB of the trainer's own first epoch of `config` at `batch` on CUDA (model.trainer.fit), on a
    few of `data`'s windows: three whole training batches and a partial one, three validation batches. The third
    call of a shape is the one CUDA graphs capture (model/_graphs.py), so the graphs an epoch holds are in the peak
    (the partial batch is padded and replays the first graph; with BatchNorm it gets its own). The data stays on
    the host: what a trial keeps on the GPU is added apart (tune/_preflight.data_on_gpu_mb)."""
    few = few_windows(data, train=3 * batch + max(1, batch // 2), val=3 * batch)
    config = copy.deepcopy(config)
    t = config.train
    t.batch_size, t.gradient_accumulation_steps, t.num_epochs = batch, 1, 1
    t.data_on_device, t.checkpoint_every, t.num_workers, t.resume = "off", 0, 0, None
    with tempfile.TemporaryDirectory(prefix="probe") as out:
        t.output_dir = out
        (record,) = fit(config, few)
    return record.peak_memory_mb


def probe_windows(data: PreparedData) -> int:
    """The largest batch trainer_probe can run on `data` (0: too few windows)."""
    return len(data.starts("train")) * 2 // 7


def few_windows(data: PreparedData, train: int, val: int) -> PreparedData:
    """`data` with its train split cut to its first `train` windows and its val split made of the first `val` of
    them (a probe measures memory, not skill; a short file's val split may hold too few), the arrays shared."""
    span = window_span(data.config)
    starts = data.starts("train")
    if len(starts) < max(train, val):
        raise ValueError(f"the train split has {len(starts)} windows, fewer than the {max(train, val)} asked for")
    first = data.splits["train"][0]
    splits = {**data.splits, "train": (first, int(starts[train - 1]) + span),
              "val": (first, int(starts[val - 1]) + span)}
    return dataclasses.replace(data, splits=splits)


def host_probe(config: Config, shape: DataShape, batch: int) -> float:
    """Host memory (MB) one CPU training step of `config` at `batch` adds to this process's peak RSS: the peak is
    reset first (reset_host_peak), and freed heap is handed back with malloc_trim before and after."""
    _trim()
    before = host_memory_mb("VmRSS")
    reset_host_peak()
    model = _model(config, shape, "cpu")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x, up = _inputs(config, shape, batch, "cpu")
    (model(x, up).float() ** 2).mean().backward()
    optimizer.step()
    peak = host_memory_mb("VmHWM")
    del model, optimizer, x, up
    _trim()
    return peak - before


def reset_host_peak() -> None:
    """Linux: this process's peak RSS (VmHWM, and so ru_maxrss) becomes its current RSS."""
    Path("/proc/self/clear_refs").write_text("5")


def host_memory_mb(key: str = "VmHWM") -> float:
    """A line of /proc/self/status in MB: VmRSS (now) or VmHWM (the peak since the start or the last reset)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise OSError(f"/proc/self/status has no {key}")


def _trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
