"""Where the on-disk cache starts to pay: prepare() in memory vs through the cache, by cropped size.

    python -m benchmarks.cache [--sizes-mb 16 64 256 1024] [--folder /tmp/convlstm-cache-bench]

For each size, a reference-schema file (56 channels, full 10-60N / 70-140E grid, upstream box on; 0.25 deg, or
0.5 / 1 deg where 0.25 would give fewer than 60 time steps) is written with benchmarks.large_file, then each step
runs in a fresh process: prepare() in memory, prepare() that builds the cache, prepare() that finds it (a rerun, a
retrain) -- wall time and peak RSS of each -- and random batches of 4 windows gathered from the arrays, ndarray vs
warm memmap. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from benchmarks._common import command, write_json
from benchmarks.large_file import ROOT, run_measured, write_reference_stream

# Runs in the measured child: prepare (and optionally gather), prints one JSON line.
_CHILD = """
import json, sys, time
import numpy as np
from data_io import DataConfig, prepare
from model.batches import gather
path, threshold, cache_dir, batches = sys.argv[1], float(sys.argv[2]), sys.argv[3], int(sys.argv[4])
t0 = time.perf_counter()
data = prepare(DataConfig(data=path, include_upstream=True, cache_threshold_mb=threshold, cache_dir=cache_dir))
prepare_s = time.perf_counter() - t0
arrays = {"inputs": data.inputs, "targets": data.targets, "upstream": data.upstream}
starts = data.starts("train")
rng = np.random.default_rng(0)
t0 = time.perf_counter()
for _ in range(batches):
    gather(arrays, rng.choice(starts, 4), 6, 1, 1)
gather_s = time.perf_counter() - t0
print(json.dumps({"prepare_s": prepare_s, "gather_ms_per_batch": 1e3 * gather_s / max(1, batches),
                  "cropped_mb": data.nbytes() / 2**20, "memmap": data.cache_dir is not None}))
"""


def measure(path: Path, threshold: float, cache_dir: Path, batches: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    run = run_measured([sys.executable, "-c", _CHILD, str(path), str(threshold), str(cache_dir), str(batches)], env=env)
    if run["returncode"] != 0:
        raise RuntimeError(run["log_tail"])
    line = [ln for ln in run["log_tail"].splitlines() if ln.startswith("{")][-1]
    return {**json.loads(line), "peak_rss_mb": run["peak_rss_mb"]}


def _grid_for(size_mb: float) -> tuple[float, int]:
    """The finest of 0.25/0.5/1 deg at which size_mb of cropped arrays spans at least 60 time steps."""
    for resolution in (0.25, 0.5, 1.0):
        def cells(deg_lat, deg_lon):
            return (int(deg_lat / resolution) + 1) * (int(deg_lon / resolution) + 1)

        per_step = 4 * (56 * (cells(15, 15) + cells(25, 40)) + cells(15, 15))  # inputs (both boxes) + target
        steps = int(size_mb * 2**20 // per_step)
        if steps >= 60:
            return resolution, steps
    return 1.0, 60


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cache", description=__doc__.split("\n")[0])
    p.add_argument("--sizes-mb", type=float, nargs="+", default=[16, 64, 256, 1024], help="cropped sizes")
    p.add_argument("--folder", default="/tmp/convlstm-cache-bench")
    p.add_argument("--batches", type=int, default=200)
    p.add_argument("--output", default="benchmarks/results/cache.json")
    args = p.parse_args(argv)

    folder = Path(args.folder)
    rows = []
    try:
        for size in args.sizes_mb:
            resolution, steps = _grid_for(size)
            data = write_reference_stream(folder / f"ref_{steps}.nc", steps, resolution=resolution)
            cache = folder / "cache"
            row = {"target_cropped_mb": size, "resolution": resolution, "file_mb": data.stat().st_size / 2**20,
                   "steps": steps, "in_memory": measure(data, 1e9, cache, 0), "cache_build": measure(data, 0, cache, 0),
                   "cache_hit": measure(data, 0, cache, 0), "gather_in_memory": measure(data, 1e9, cache, args.batches),
                   "gather_memmap": measure(data, 0, cache, args.batches)}
            rows.append(row)
            m, b, h = row["in_memory"], row["cache_build"], row["cache_hit"]
            print(f"{m['cropped_mb']:6.0f} MB cropped ({row['file_mb']:5.0f} MB file, {resolution:g} deg): prepare in "
                  f"memory {m['prepare_s']:5.2f} s, peak {m['peak_rss_mb']:5.0f} MB | cache build "
                  f"{b['prepare_s']:5.2f} s, peak {b['peak_rss_mb']:5.0f} MB | cache hit {h['prepare_s']:5.3f} s, "
                  f"peak {h['peak_rss_mb']:4.0f} MB "
                  f"| gather {row['gather_in_memory']['gather_ms_per_batch']:.2f} (ndarray) vs "
                  f"{row['gather_memmap']['gather_ms_per_batch']:.2f} (memmap) ms/batch", flush=True)
            shutil.rmtree(cache, ignore_errors=True)
            data.unlink()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    write_json(args.output, {"command": command("cache", argv), "rows": rows})


if __name__ == "__main__":
    main()
