"""A set of reference-schema files split in time, passed to --data as a glob, streamed into the cache and trained
on for one epoch.

    python -m benchmarks.many_files --gb 30 --files 20 [--limit-gb 8] [--folder /tmp/convlstm-many] [--keep] [--reuse]

Writes --files consecutive files (12-hourly steps, 0.25 degree, 70-140E / 10-60N) totalling at least --gb GiB, each
written time chunk by time chunk, then runs `python -m model.train --data 'FOLDER/era_*.nc' --num-epochs 1` twice in
a child process (the first run combines the files lazily with dask and streams them into the cache; the second
maps the cache) and reports each run's peak RSS (VmHWM of the child), the wall times and the sizes.
The files and the cache are deleted unless --keep.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from benchmarks.large_file import bytes_per_step, train_one_epoch, write_reference_stream

TARGET_PEAK_MB = 2048


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.many_files", description=__doc__.split("\n")[0])
    p.add_argument("--gb", type=float, default=30.0, help="total size of the files, GiB")
    p.add_argument("--files", type=int, default=20, help="number of files the steps are split into")
    p.add_argument("--limit-gb", type=float, default=None, help="ulimit -v of the training process, GiB (default none)")
    p.add_argument("--resolution", type=float, default=0.25)
    p.add_argument("--folder", default="/tmp/convlstm-many")
    p.add_argument("--keep", action="store_true", help="keep the files and the cache")
    p.add_argument("--reuse", action="store_true", help="use the files already in --folder (from a --keep run)")
    p.add_argument("--output", default="benchmarks/results/many_files.json")
    p.add_argument("train_flags", nargs="*", help="extra flags for model.train after --, e.g. -- --hidden-channels 8")
    args = p.parse_args(argv)

    folder = Path(args.folder)
    per_file = -(-int(args.gb * 2**30) // (bytes_per_step(args.resolution) * args.files))  # steps per file
    t0 = time.perf_counter()
    names = [folder / f"era_{i:03d}.nc" for i in range(args.files)]
    if args.reuse and all(f.is_file() for f in names):  # a kept set from an earlier run of the same command
        paths = names
        shutil.rmtree(folder / "cache", ignore_errors=True)
    else:
        paths = [write_reference_stream(f, per_file, args.resolution, seed=i, first_step=i * per_file)
                 for i, f in enumerate(names)]
    write_s = time.perf_counter() - t0
    total = sum(f.stat().st_size for f in paths)
    print(f"wrote {len(paths)} files in {folder}: {total / 2**30:.2f} GiB, {per_file} steps each, in {write_s:.0f} s")
    flags = ["--hidden-channels", "8", "--batch-size", "8", "--cache-dir", str(folder / "cache"), *args.train_flags]
    limit = int(args.limit_gb * 2**30) if args.limit_gb else None
    runs = {}
    try:
        for name in ("first run (combines the files, builds the cache)", "second run (cache hit)"):
            runs[name] = r = train_one_epoch(folder / "era_*.nc", folder / "run", limit, flags)
            print(f"{name}: exit {r['returncode']}, {r['wall_s']:.0f} s, peak RSS {r['peak_rss_mb']:.0f} MB")
            if r["returncode"] != 0:
                print(r["log_tail"])
                break
        cache_bytes = sum(f.stat().st_size for f in (folder / "cache").rglob("*.npy"))
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    peak = max((r["peak_rss_mb"] or 0) for r in runs.values())
    from benchmarks._common import command, write_json

    result = {"command": command("many_files", argv), "files": len(paths),
              "total_bytes": total, "steps_per_file": per_file, "write_s": write_s, "limit_bytes": limit,
              "cache_bytes": cache_bytes, "train_flags": flags, "runs": runs, "peak_rss_mb": peak,
              "target_peak_rss_mb": TARGET_PEAK_MB, "within_target": bool(peak and peak < TARGET_PEAK_MB)}
    write_json(args.output, result)
    print(f"cache {cache_bytes / 2**30:.2f} GiB; peak RSS {peak:.0f} MB (target < {TARGET_PEAK_MB} MB); "
          f"results in {args.output}")


if __name__ == "__main__":
    main()
