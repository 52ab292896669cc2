"""A reference-schema file larger than the memory the trainer may use, trained on for one epoch.

    python -m benchmarks.large_file --gb 12 --limit-gb 6 [--folder /tmp/convlstm-large] [--keep]

Writes a 56-channel, 0.25-degree file over 70-140E / 10-60N time chunk by time chunk (the writer never holds more
than one chunk), then runs `python -m model.train --num-epochs 1` on it in a child process whose address space is
capped with `ulimit -v` (RLIMIT_AS), and reports the file size, the limit, the child's peak RSS (VmHWM, from
getrusage(RUSAGE_CHILDREN)) and the wall time of each step. The file and its cache are deleted unless --keep.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from data_io.demo import REFERENCE_LEVELS, UNITS, VARIABLES

ROOT = Path(__file__).resolve().parents[1]


def bytes_per_step(resolution: float, lat_range=(10.0, 60.0), lon_range=(70.0, 140.0), levels=REFERENCE_LEVELS) -> int:
    n_lat = len(np.arange(lat_range[0], lat_range[1] + 1e-6, resolution))
    n_lon = len(np.arange(lon_range[0], lon_range[1] + 1e-6, resolution))
    return 4 * n_lat * n_lon * (1 + len(VARIABLES) * len(levels))


def write_reference_stream(
    path: str | Path, steps: int, resolution: float = 0.25, chunk_steps: int = 8, seed: int = 0,
    lat_range: tuple[float, float] = (10.0, 60.0), lon_range: tuple[float, float] = (70.0, 140.0),
    levels: list[float] | None = None, first_step: int = 0,
) -> Path:
    """The reference schema (precipitation + DPT/GPH/TEM/U/V on 11 levels), written chunk_steps at a time.

    Fields are a west-to-east travelling wave on a standard-atmosphere base plus noise drawn from a small bank,
    so that writing is bound by the disk, not the random number generator. Uncompressed: size = steps x
    bytes_per_step(resolution) plus a few kB. ``first_step``: the file continues a series (many_files.py).
    """
    import netCDF4

    levels = list(levels or REFERENCE_LEVELS)
    rng = np.random.default_rng(seed)
    lat = np.arange(lat_range[0], lat_range[1] + 1e-6, resolution)
    lon = np.arange(lon_range[0], lon_range[1] + 1e-6, resolution)
    la, lo = np.meshgrid(np.deg2rad(lat), np.deg2rad(lon), indexing="ij")
    bank = rng.standard_normal((16, len(lat), len(lon)), dtype=np.float32)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with netCDF4.Dataset(tmp, "w", format="NETCDF4") as nc:
        nc.title = f"convlstm-tune large reference-schema file (seed {seed})"
        for name, size in (("time", None), ("level", len(levels)), ("lat", len(lat)), ("lon", len(lon))):
            nc.createDimension(name, size)
        coords = {"time": ("hours since 2000-01-01", "f8"), "level": ("hPa", "f4"), "lat": ("degrees_north", "f4"),
                  "lon": ("degrees_east", "f4")}
        for name, (units, dtype) in coords.items():
            var = nc.createVariable(name, dtype, (name,))
            var.units = units
        nc["level"][:], nc["lat"][:], nc["lon"][:] = levels, lat, lon
        nc["lat"].standard_name, nc["lon"].standard_name = "latitude", "longitude"
        plane = (1, len(lat), len(lon))
        rain = nc.createVariable("precipitation", "f4", ("time", "lat", "lon"), chunksizes=plane)
        rain.units = UNITS["precipitation"]
        fields = {}
        for name in VARIABLES:
            fields[name] = nc.createVariable(name, "f4", ("time", "level", "lat", "lon"), chunksizes=(1, *plane))
            fields[name].units = UNITS[name]
        for t0 in range(0, steps, chunk_steps):
            t1 = min(steps, t0 + chunk_steps)
            t = np.arange(t0, t1) + first_step
            nc["time"][t0:t1] = 12.0 * t
            wave = np.cos(6 * lo[None] - 0.4 * t[:, None, None]) * np.sin(3 * la[None])  # (t, lat, lon)
            pick = rng.integers(0, len(bank), size=(t1 - t0, 1 + len(VARIABLES) * len(levels)))
            rain[t0:t1] = np.clip(2.0 * wave + bank[pick[:, 0]] - 0.5, 0.0, None) * 3.0
            k = 1
            for name in VARIABLES:
                block = np.empty((t1 - t0, len(levels), len(lat), len(lon)), dtype=np.float32)
                for j, level in enumerate(levels):
                    base, amp, noise = _level_scales(name, level)
                    block[:, j] = base + amp * wave + noise * bank[pick[:, k]]
                    k += 1
                fields[name][t0:t1] = block
    tmp.replace(path)
    return path


def _level_scales(name: str, level: float) -> tuple[float, float, float]:
    gph = 44330.0 * (1 - (level / 1013.25) ** 0.19)
    tem = max(216.0, 288.0 - 6.5e-3 * gph)
    return {"GPH": (gph, 60.0, 3.0), "TEM": (tem, 4.0, 0.5), "DPT": (tem - 8.0, 4.0, 0.5),
            "U": (10.0, 15.0, 1.0), "V": (0.0, 10.0, 1.0)}[name]


# Runs a command and prints the peak RSS of its largest process (VmHWM, ru_maxrss of RUSAGE_CHILDREN): a parent
# of its own, so that the number belongs to this command only.
_MEASURE = ("import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
            "print('peak_rss_kb', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(rc)")


def run_measured(args: list[str], limit_bytes: int | None = None, env: dict | None = None) -> dict:
    """Run args (with `ulimit -v limit_bytes` when given); exit code, wall time, peak RSS and the output's tail."""

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))

    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _MEASURE, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, preexec_fn=limit if limit_bytes else None)
    wall = time.perf_counter() - start
    lines = proc.stdout.strip().splitlines()
    peak_kb = int(lines[-1].split()[1]) if lines and lines[-1].startswith("peak_rss_kb") else None
    return {"returncode": proc.returncode, "wall_s": wall, "peak_rss_mb": peak_kb / 1024 if peak_kb else None,
            "log_tail": (proc.stdout + proc.stderr)[-2000:]}


def train_one_epoch(data: Path, out: Path, limit_bytes: int | None, extra: list[str] = ()) -> dict:
    """python -m model.train for one epoch on the CPU in a child process under `ulimit -v limit_bytes`."""
    args = [sys.executable, "-m", "model.train", "--data", str(data), "--output-dir", str(out), "--num-epochs", "1",
            "--device", "cpu", "--checkpoint-every", "0", *extra]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT)}
    return run_measured(args, limit_bytes, env)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.large_file", description=__doc__.split("\n")[0])
    p.add_argument("--gb", type=float, default=12.0, help="file size to write, GiB")
    p.add_argument("--limit-gb", type=float, default=6.0, help="ulimit -v of the training process, GiB")
    p.add_argument("--resolution", type=float, default=0.25)
    p.add_argument("--folder", default="/tmp/convlstm-large")
    p.add_argument("--keep", action="store_true", help="keep the file and its cache")
    p.add_argument("--output", default="benchmarks/results/large_file.json")
    p.add_argument("train_flags", nargs="*", help="extra flags for model.train after --, e.g. -- --hidden-channels 8")
    args = p.parse_args(argv)

    folder = Path(args.folder)
    data = folder / "reference_large.nc"
    steps = -(-int(args.gb * 2**30) // bytes_per_step(args.resolution))  # at least --gb GiB
    t0 = time.perf_counter()
    write_reference_stream(data, steps, args.resolution)
    write_s = time.perf_counter() - t0
    size = data.stat().st_size
    print(f"wrote {data}: {size / 2**30:.2f} GiB, {steps} steps, in {write_s:.0f} s")
    flags = ["--hidden-channels", "8", "--batch-size", "8", "--cache-dir", str(folder / "cache"), *args.train_flags]
    runs = {}
    try:
        for name in ("first run (builds the cache)", "second run (cache hit)"):
            runs[name] = train_one_epoch(data, folder / "run", int(args.limit_gb * 2**30), flags)
            r = runs[name]
            print(f"{name}: exit {r['returncode']}, {r['wall_s']:.0f} s, peak RSS {r['peak_rss_mb']:.0f} MB")
            if r["returncode"] != 0:
                print(r["log_tail"])
                break
        cache_bytes = sum(f.stat().st_size for f in (folder / "cache").rglob("*.npy"))
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    from benchmarks._common import command, write_json

    result = {"command": command("large_file", argv), "file_bytes": size,
              "steps": steps, "write_s": write_s, "limit_bytes": int(args.limit_gb * 2**30),
              "cache_bytes": cache_bytes, "train_flags": flags, "runs": runs}
    write_json(args.output, result)
    print(f"cache {cache_bytes / 2**30:.2f} GiB; limit {args.limit_gb:g} GiB (ulimit -v); results in {args.output}")


if __name__ == "__main__":
    main()
