"""What `model/batches._unmap` costs: one madvise(MADV_DONTNEED) per batch per memory-mapped array.

    python -m benchmarks.unmap [--gb 4] [--batches 200] [--batch 16]

A memory-mapped array of the reference grid (56 channels, 61x61, float32) of --gb on disk, read once so it sits in
the page cache, as the on-disk cache (data_io/cache.py) is after its first epoch. Then the same random batches of
windows are gathered as the DataLoader's batches are (model.batches.gather), with and without _unmap after each:
time per batch, the madvise call alone, and the process's peak RSS over the pass (what _unmap exists to bound).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks._common import command, machine, write_json
from model.batches import _unmap, gather
from model.memory import host_memory_mb, reset_host_peak

SHAPE = (56, 61, 61)  # the reference schema's channels and downstream box at 0.25 deg


def _pass(array: np.memmap, starts: list[np.ndarray], unmap: bool) -> dict:
    arrays = {"inputs": array, "targets": array[:, :1], "upstream": None}
    _unmap([array])  # each pass starts with nothing of the file mapped in, whatever the last pass left
    reset_host_peak()
    madvise_s, t0 = 0.0, time.perf_counter()
    for s in starts:
        gather(arrays, s, 6, 1, 1)
        if unmap:
            t = time.perf_counter()
            _unmap([array])
            madvise_s += time.perf_counter() - t
    total = time.perf_counter() - t0
    return {"unmap": unmap, "ms_per_batch": 1e3 * total / len(starts),
            "madvise_us_per_call": 1e6 * madvise_s / len(starts) if unmap else None,
            "peak_rss_mb": host_memory_mb("VmHWM")}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.unmap", description=__doc__.split("\n")[0])
    p.add_argument("--gb", type=float, default=4.0)
    p.add_argument("--batches", type=int, default=200)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--output", default="benchmarks/results/unmap_cpu.json")
    args = p.parse_args(argv)
    steps = int(args.gb * 2**30 / (4 * np.prod(SHAPE)))
    rng = np.random.default_rng(0)
    starts = [rng.integers(0, steps - 7, args.batch) for _ in range(args.batches)]
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        path = Path(tmp) / "inputs.npy"
        array = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(steps, *SHAPE))
        for i in range(0, steps, 256):
            array[i : i + 256] = 1.0
        array.flush()
        del array
        array = np.load(path, mmap_mode="r")
        np.asarray(array[::1]).sum()  # read once: the page cache holds the file, as after a first epoch
        runs = [_pass(array, starts, unmap) for unmap in (True, False) * 3]
    cmd = command("unmap", argv)
    result = {"command": cmd, "machine": machine(),
              "file_gb": float(steps * 4 * np.prod(SHAPE) / 2**30), "batch": args.batch, "batches": args.batches,
              "batch_mb": float(args.batch * 6 * 4 * np.prod(SHAPE) / 2**20), "runs": runs,
              "median_ms_per_batch": {str(u): statistics.median(r["ms_per_batch"] for r in runs if r["unmap"] == u)
                                      for u in (True, False)}}
    write_json(args.output, result)
    for r in runs:
        print(r)


if __name__ == "__main__":
    main()
