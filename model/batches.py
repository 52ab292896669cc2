"""Batches of sample windows, gathered from the in-memory arrays in one indexing operation.

Two sources yield the same dicts in the same order: a DataLoader (CPU arrays, optional worker processes)
and DeviceBatches (the arrays live on the GPU; no host work per step).
"""

from __future__ import annotations

import math
import mmap
from collections.abc import Iterator

import numpy as np
import torch

from data_io import PreparedData


def epoch_order(starts: np.ndarray, shuffle: bool, seed: int, epoch: int, batch_size: int) -> list[np.ndarray]:
    """Window starts split into batches; the shuffle depends only on (seed, epoch) so resumed runs match."""
    order = np.arange(len(starts))
    if shuffle:
        order = torch.randperm(len(starts), generator=torch.Generator().manual_seed(seed * 100003 + epoch)).numpy()
    return [starts[order[i : i + batch_size]] for i in range(0, len(order), batch_size)]


def optimizer_steps(batches: list[np.ndarray], accumulation: int) -> list[list[np.ndarray]]:
    """Micro-batches grouped into optimizer steps; the remainder at the end of an epoch still steps."""
    return [batches[i : i + accumulation] for i in range(0, len(batches), accumulation)]


Shard = list[tuple[np.ndarray, bool]]  # one rank's micro-batches of one optimizer step: (window starts, real)


def shard_steps(steps: list[list[np.ndarray]], rank: int, world: int, whole: bool) -> list[Shard]:
    """One data-parallel rank's share of every optimizer step; the N shares hold exactly the step's windows.

    whole=True: ranks take whole micro-batches in turn (micro-batches rank, rank+N, ...), so each GPU runs the
    searched micro-batch and N GPUs need N times fewer of them. whole=False: each rank takes batch/N windows of
    every micro-batch. Every rank gets the same number of micro-batches per step (DDP all-reduces on the last
    one): where a rank has nothing left it gets a stand-in, a real micro-batch flagged False whose loss counts
    for nothing. Stand-ins are never empty, because inductor cannot compile empty tensors.
    """
    shards = []
    for step in steps:
        if world == 1:
            shards.append([(b, True) for b in step])
        elif whole:
            mine: Shard = [(b, True) for b in step[rank::world]]
            shards.append(mine + [(step[0], False)] * (-(-len(step) // world) - len(mine)))
        else:
            shards.append([(b[rank::world], True) if len(b[rank::world]) else (b[:1], False) for b in step])
    return shards


def pad_batch(batch: dict, size: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """(x, up, y) of a batch filled up to `size` windows: inputs with zeros, targets with NaN, which the loss
    masks, so a padded window adds nothing to the loss, its gradient or a weight sum (model/losses.py)."""
    def pad(t: torch.Tensor | None, value: float) -> torch.Tensor | None:
        if t is None or t.shape[0] >= size:
            return t
        return torch.cat([t, t.new_full((size - t.shape[0], *t.shape[1:]), value)])

    return pad(batch["x"], 0.0), pad(batch.get("up"), 0.0), pad(batch["y"], math.nan)


def gather(arrays: dict, starts, window: int, offset: int, steps: int) -> dict:
    """x: (B, window, C, H, W); y: (B, steps, K, H, W); last: the target at the last input step (persistence)."""
    if isinstance(starts, torch.Tensor):
        def arange(n):
            return torch.arange(n, device=starts.device)
    else:
        arange = np.arange
    t_in = starts[:, None] + arange(window)[None, :]
    last = starts + window - 1
    t_out = last[:, None] + offset + arange(steps)[None, :]
    batch = {"x": arrays["inputs"][t_in], "y": arrays["targets"][t_out], "last": arrays["targets"][last]}
    if arrays.get("upstream") is not None:
        batch["up"] = arrays["upstream"][t_in]
    return batch


class _BatchDataset(torch.utils.data.Dataset):
    """Holds the PreparedData itself: worker processes get it by fork or, when spawned, as a pickle that maps the
    on-disk cache again (memory-mapped arrays are never copied into each worker)."""

    def __init__(self, data: PreparedData, batches: list[np.ndarray]) -> None:
        self.data, self.batches = data, batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> dict:
        d, c = self.data, self.data.config
        arrays = {"inputs": d.inputs, "targets": d.targets, "upstream": d.upstream}
        out = gather(arrays, self.batches[i], c.window_size, c.target_offset, c.forecast_steps)
        _unmap(arrays.values())
        return {k: torch.from_numpy(v) for k, v in out.items()}


def _unmap(arrays) -> None:
    """Drop this process's mapping of the cache pages a batch was copied from (they stay in the page cache).

    An epoch visits every window, so without this each process's RSS grows to the whole memory-mapped cache
    (a 2 GB cache of 20 files peaked at 2.5 GB); the next touch of a page is a minor fault from the page cache."""
    for a in arrays:
        mm = getattr(a, "_mmap", None)  # np.memmap's mapping (np.load(mmap_mode="r"))
        if mm is not None and hasattr(mm, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
            mm.madvise(mmap.MADV_DONTNEED)


def cpu_batches(data: PreparedData, batches: list[np.ndarray], num_workers: int, pin: bool) -> Iterator[dict]:
    ds = _BatchDataset(data, batches)
    return iter(torch.utils.data.DataLoader(
        ds, batch_size=None, shuffle=False, num_workers=num_workers, pin_memory=pin,
        persistent_workers=False, prefetch_factor=4 if num_workers else None,
    ))


class DeviceBatches:
    """The dataset copied to the device once; batches are gathered there by index tensors."""

    def __init__(self, data: PreparedData, device: torch.device) -> None:
        def put(a):
            if a is None:
                return None
            if not isinstance(a, np.memmap):
                return torch.from_numpy(np.ascontiguousarray(a)).to(device)
            # Memory-mapped from the on-disk cache: copied up in slices of ~256 MB so host memory stays small.
            out = torch.empty(a.shape, dtype=torch.float32, device=device)
            step = max(1, (256 * 2**20) // max(1, a[0].nbytes))
            for i in range(0, len(a), step):
                out[i : i + step].copy_(torch.from_numpy(np.array(a[i : i + step])))
            return out

        self.arrays = {"inputs": put(data.inputs), "targets": put(data.targets), "upstream": put(data.upstream)}
        self.cfg, self.device = data.config, device

    def __call__(self, batches: list[np.ndarray]) -> Iterator[dict]:
        c = self.cfg
        if not batches:
            return
        # One upload per epoch; slicing it afterwards needs no host work or sync per step.
        order = torch.from_numpy(np.concatenate(batches)).to(self.device)
        for idx in order.split([len(b) for b in batches]):
            yield gather(self.arrays, idx, c.window_size, c.target_offset, c.forecast_steps)
