"""How well the memory pre-flight predicts: predicted against measured peak memory over many configs.

    python -m benchmarks.preflight --device cuda [--configs 32] [--share 0.125] [--days 30]
    python -m benchmarks.preflight --device cpu --resolution 1.0      # host memory, one step per config

On a reference-schema file with the upstream box: the pre-flight is calibrated once (tune/_preflight.calibrate, as a
search does), then for each config drawn from the default space and graphcast's model family
- cuda: the real trainer (model.trainer.fit, one epoch, CUDA-graphed default path) runs under a memory cap of
  --share of the card, as a trial with that share would; its peak_memory_mb, or `oom`;
- cpu: one training step's host memory (model/memory.host_probe).
Reported: the median |predicted / measured - 1| over the configs that ran, the share of real OOMs the pre-flight
would have skipped (prediction x margin over the budget), and the share of configs that fit but would be skipped.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks._common import command, machine, reference_file, write_json
from data_io import ConfigError, prepare
from model.memory import DataShape, footprint, host_probe
from tune._preflight import calibrate, data_on_gpu_mb, fit, probe_configs
from tune.experiment import trial_config

WIDTHS = [8, 16, 32, 64, 128]


def draw(rng: random.Random) -> dict:
    """One config's params: the default space (stacked) or a graphcast model type with searched widths/batch."""
    params: dict = {"batch_size": rng.choice([2, 4, 8, 16, 32])}
    kind = rng.choice(["stacked", "stacked", "shallow", "dual_stream", "dual_stream_deep"])
    params["model_type"] = kind
    if kind == "stacked":
        params["hidden_channels"] = [rng.choice(WIDTHS) for _ in range(rng.randint(1, 3))]
    elif rng.random() < 0.5:
        levels = 4 if kind == "dual_stream_deep" else 2
        start = rng.choice([16, 32, 64])
        params["hidden_channels"] = [start * 2**i for i in range(levels)]
    if kind != "stacked":
        params["use_attention"] = rng.random() < 0.7
    return params


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.preflight", description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--configs", type=int, default=32)
    p.add_argument("--share", type=float, default=0.125, help="GPU share each config runs under (cuda)")
    p.add_argument("--margin", type=float, default=1.1)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--resolution", type=float, default=0.25)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=None, help="reference-schema file (default: written to /tmp)")
    p.add_argument("--epochs", type=int, default=1, help="epochs each config trains (cuda); the partial batch's "
                   "and validation's graphs are captured at an epoch's third call of their shape")
    p.add_argument("--no-cuda-graphs", action="store_true", help="measure the eager path")
    p.add_argument("--output", default=None)
    p.add_argument("--recount", metavar="RESULTS", type=Path,
                   help="no run: predict RESULTS' configs again with today's count, from its own measured probes")
    args = p.parse_args(argv)
    if args.recount:
        return recount(args.recount, args.margin, args.output, argv)

    path = Path(args.data or f"/tmp/preflight_ref_{args.days}d_{args.resolution}.nc")
    reference_file(path, days=args.days, upstream=True, resolution=args.resolution)
    base = {"data": {"data": str(path), "include_upstream": True}, "model": {},
            "train": {"num_epochs": args.epochs, "device": args.device, "checkpoint_every": 0, "num_workers": 0,
                      "cuda_graphs": not args.no_cuda_graphs}}
    data = prepare(trial_config(base, {}).data)
    shape = DataShape.of(data)
    if args.device == "cuda":
        torch.cuda.set_per_process_memory_fraction(1.0)
    t0 = time.perf_counter()
    calibration = calibrate(probe_configs(base, shape), shape, args.device, data)
    calibrate_s = time.perf_counter() - t0
    budget = (args.share if args.device == "cuda" else 1.0) * calibration.total_mb
    fits = "; ".join(f"{k}: {a:.0f} MB + {r:.3f} x counted activations" for k, (a, r) in calibration.topologies.items())
    print(f"calibrated in {calibrate_s:.1f} s: {fits}; budget {budget:.0f} MB", flush=True)

    rng, rows = random.Random(args.seed), []
    while len(rows) < args.configs:
        params = draw(rng)
        try:
            config = trial_config(base, params)
            fp = calibration.footprint(config, shape)
        except ConfigError:
            continue
        on_gpu = data_on_gpu_mb(config, shape, calibration.total_mb, args.device == "cuda")
        predicted = calibration.predict_mb(fp, on_gpu, config.model.topology)
        row = {"params": params, "predicted_mb": predicted, "counted_activations_mb": fp.activations / 2**20,
               "topology": config.model.topology}
        t = time.perf_counter()
        row.update(_measure(config, data, shape, args))
        row["seconds"] = time.perf_counter() - t
        row["would_skip"] = args.margin * predicted > budget
        rows.append(row)
        measured = f"{row['measured_mb']:.0f}" if row.get("measured_mb") else row["outcome"]
        print(f"{len(rows):3d} {params}: predicted {predicted:.0f} MB, measured {measured}", flush=True)

    summary = summarize(rows)
    result = {"command": command("preflight", argv), "machine": machine(),
              "data": str(path), "shape": shape.key(), "budget_mb": budget, "margin": args.margin,
              "calibration": calibration.__dict__, "calibrate_s": calibrate_s, "summary": summary, "rows": rows}
    output = args.output or f"benchmarks/results/preflight_{args.device}.json"
    write_json(output, result)
    print(f"\n{summary}\nresults in {output}")


def summarize(rows: list[dict]) -> dict:
    ran = [r for r in rows if r["outcome"] == "ok"]
    ooms = [r for r in rows if r["outcome"] == "oom"]
    errors = [abs(r["predicted_mb"] / r["measured_mb"] - 1) for r in ran]
    return {
        "configs": len(rows), "ran": len(ran), "oom": len(ooms),
        "median_abs_error": statistics.median(errors) if errors else None,
        "p90_abs_error": sorted(errors)[int(0.9 * (len(errors) - 1))] if errors else None,
        "ooms_caught": sum(r["would_skip"] for r in ooms) / len(ooms) if ooms else None,
        "fitting_skipped": sum(r["would_skip"] for r in ran) / len(ran) if ran else None,
        "median_error_by_model_type": {
            k: statistics.median(r["predicted_mb"] / r["measured_mb"] - 1 for r in ran
                                 if r["params"]["model_type"] == k)
            for k in sorted({r["params"]["model_type"] for r in ran})},
    }


def recount(path: Path, margin: float, output: str | None, argv: list[str] | None) -> None:
    """Predict a results file's configs again with today's count (model/memory.footprint), fitted to the same
    measured probes: what the pre-flight would have decided on that run's measurements. The count follows the
    fused gate kernels on CUDA, so this is meaningful for runs made with them (preflight_h200_v6 and later)."""
    old = json.loads(path.read_text())
    cal = old["calibration"]
    fused = cal["device"].startswith("cuda")
    c, k, grid, up = re.fullmatch(r"c(\d+)-(\d+)-(\d+x\d+)-up(\w+)", old["shape"]).groups()
    dims = [tuple(int(n) for n in g.split("x")) for g in (grid, up) if g != "none"]
    shape = DataShape(in_channels=int(c), out_channels=int(k), grid=dims[0], upstream_grid=dims[1] if up != "none"
                      else None)
    base = {"data": {"data": old["data"], "include_upstream": True}, "model": {},
            "train": {"device": "cuda" if fused else "cpu", "checkpoint_every": 0, "num_workers": 0}}
    configs = {config.model.topology: config for config in probe_configs(base, shape)}
    topologies = {}
    for topology, config in configs.items():
        probes = []
        for probe in (p for p in cal["probes"] if p["topology"] == topology):
            fp = footprint(config, shape, probe["batch"], fused)
            probes.append({**probe, "activations_mb": fp.activations / 2**20, "states_mb": fp.states / 2**20})
        topologies[topology] = list(fit(probes))
    rows = []
    for row in old["rows"]:
        config = trial_config(base, row["params"])
        intercept, ratio = cal["topologies"].get(row["topology"], (cal["intercept_mb"], cal["ratio"]))
        before = footprint(config, shape)  # what that run counted: the element-wise gates
        data_mb = row["predicted_mb"] - intercept - ratio * row["counted_activations_mb"] - before.states / 2**20
        fp = footprint(config, shape, fused=fused and config.train.fused_gates)
        intercept, ratio = topologies.get(row["topology"], topologies[next(iter(topologies))])  # as predict_mb
        predicted = intercept + ratio * fp.activations / 2**20 + fp.states / 2**20 + data_mb
        rows.append({**row, "predicted_mb": predicted, "counted_activations_mb": fp.activations / 2**20,
                     "would_skip": margin * predicted > old["budget_mb"], "predicted_before_mb": row["predicted_mb"]})
    summary = summarize(rows)
    result = {"command": command("preflight", argv), "recounted": str(path), "machine": old["machine"],
              "shape": old["shape"], "budget_mb": old["budget_mb"], "margin": margin, "topologies": topologies,
              "summary": summary, "summary_before": old["summary"], "rows": rows}
    output = output or str(path).replace(".json", "_recount.json")
    write_json(output, result)
    print(f"{summary}\nresults in {output}")


def _measure(config, data, shape: DataShape, args) -> dict:
    if args.device == "cpu":
        return {"outcome": "ok", "measured_mb": host_probe(config, shape, config.train.batch_size)}
    from model.errors import OutOfMemory
    from model.trainer import fit

    torch.cuda.set_per_process_memory_fraction(args.share)
    torch.cuda.empty_cache()
    with tempfile.TemporaryDirectory() as out:
        config.train.output_dir = out
        try:
            history = fit(config, data)
            # peak_memory_mb is the reserved peak, what the cap bounds; the last epoch's allocated peak beside it
            # (fit resets the peaks each epoch) shows what the caching allocator keeps on top.
            return {"outcome": "ok", "measured_mb": max(r.peak_memory_mb for r in history),
                    "per_epoch_mb": [r.peak_memory_mb for r in history],
                    "last_epoch_allocated_mb": torch.cuda.max_memory_allocated() / 2**20}
        except OutOfMemory as exc:
            return {"outcome": "oom", "measured_mb": None, "oom_peak_mb": exc.peak_memory_mb}
        finally:
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
