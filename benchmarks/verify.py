"""Time `model.verify_table.score_table` at validation size: one rain variable, 100 windows x 4 leads x 48x48.

Two models plus persistence and climatology, default thresholds and FSS windows, 1000 bootstrap replicates;
fixed seed. Writes benchmarks/results/verify.json (command, machine, seconds).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import xarray as xr

from benchmarks._common import command, write_json
from model import verify_table as vt


def _ds(tp: np.ndarray) -> xr.Dataset:
    n, leads, ny, nx = tp.shape
    coords = {"time": pd.date_range("2021-06-01", periods=n, freq="1D"), "lead": np.arange(1, leads + 1) * 24,
              "lat": np.linspace(20, 40, ny), "lon": np.linspace(100, 120, nx)}
    return xr.Dataset({"tp": (("time", "lead", "lat", "lon"), tp, {"units": "mm"})}, coords=coords)


def inputs(shape: tuple[int, int, int, int], seed: int = 0):
    rng = np.random.default_rng(seed)
    tp = rng.gamma(0.4, 8.0, shape)
    truth = _ds(tp)
    forecasts = {m: _ds(np.clip(tp + rng.normal(0, s, shape), 0, None)) for m, s in (("base", 6.0), ("deep", 3.0))}
    persistence = truth.shift(time=1).fillna(truth.mean("time"))
    climatology = truth.mean("time").broadcast_like(truth).transpose(*truth["tp"].dims)
    return forecasts, truth, persistence, climatology


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--windows", type=int, default=100)
    p.add_argument("--leads", type=int, default=4)
    p.add_argument("--grid", type=int, default=48)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--output", default="benchmarks/results/verify.json")
    args = p.parse_args(argv)
    forecasts, truth, persistence, climatology = inputs((args.windows, args.leads, args.grid, args.grid))
    seconds, cpu = [], []
    for _ in range(args.repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        table = vt.score_table(forecasts, truth, persistence, climatology)
        seconds.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    # CPU seconds too: on a shared machine the wall time measures the other processes as well.
    print(f"score_table: {len(table)} rows, best {min(seconds):.2f} s wall of {[round(s, 2) for s in seconds]}, "
          f"{min(cpu):.2f} s CPU")
    write_json(args.output, {"command": command("verify", argv),
                             "shape": [args.windows, args.leads, args.grid, args.grid], "rows": len(table),
                             "seconds": min(seconds), "all_seconds": seconds, "cpu_seconds": min(cpu),
                             "threads": "numpy default"})


if __name__ == "__main__":
    main()
