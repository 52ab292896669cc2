"""Graphcast's model types against the plain stacked model: same data, epochs, batch and seed; test scores and speed.

    python -m benchmarks.family --device cpu                               # demo data (8x8, upstream 13x21)
    python -m benchmarks.family --device cpu --reference --resolution 1.0  # reference schema, 56 channels, 1 deg
    python -m benchmarks.family --device cuda --reference                  # reference schema at 0.25 deg

Trains `stacked` ([64, 128]), `shallow` and `dual_stream` (graphcast's defaults for each) with the upstream box,
batch 4, --epochs epochs, by our trainer (model.trainer.fit); then scores the best checkpoint of each on the same
test windows (tune/_compare.score_on_test: RMSE and CSI at 10 mm, each model minus the first with a block-bootstrap
95% interval, persistence and climatology beside them). Reports samples/s (median epoch after the first) and peak
memory per model (GPU: allocated; CPU: the peak RSS while that model trained, reset per model).
Writes benchmarks/results/family_<device>_<data>.json.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from benchmarks._common import command, reference_file, write_json
from data_io import prepare
from model.config import config_from_args
from model.memory import host_memory_mb, reset_host_peak
from model.trainer import fit
from tune._compare import HEADLINE, headline, score_on_test

MODELS = {
    "stacked [64, 128]": {"model_type": "stacked", "hidden_channels": [64, 128]},
    "shallow": {"model_type": "shallow"},
    "dual_stream": {"model_type": "dual_stream"},
}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.family", description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reference", action="store_true", help="a reference-schema file instead of the demo data")
    p.add_argument("--days", type=int, default=120)
    p.add_argument("--resolution", type=float, default=0.25)
    p.add_argument("--output", default=None)
    args = p.parse_args(argv)

    if args.reference:
        data_path = reference_file(f"/tmp/family_ref_{args.days}d_{args.resolution}.nc", days=args.days,
                                   upstream=True, resolution=args.resolution)
        label = f"reference schema {args.resolution} deg, {args.days} days"
    else:
        from tune.search import demo_path

        data_path, label = demo_path(), "demo"
    rows, checkpoints = {}, {}
    with tempfile.TemporaryDirectory() as work:
        for name, model in MODELS.items():
            base = {"data": {"data": str(data_path), "include_upstream": True}, "model": model,
                    "train": {"num_epochs": args.epochs, "batch_size": args.batch_size, "seed": args.seed,
                              "device": args.device, "num_workers": 0, "checkpoint_every": 0,
                              "output_dir": str(Path(work) / name.split()[0])}}
            config = config_from_args(argparse.Namespace(), base=base)
            data = prepare(config.data)
            if args.device == "cpu":  # the trainer's CPU peak is the process's; reset it per model (Linux)
                reset_host_peak()
            history = fit(config, data)
            later = history[1:] or history
            rows[name] = {"samples_per_s": statistics.median(r.samples_per_s for r in later),
                          "time_per_epoch_s": statistics.median(r.time_per_epoch_s for r in later),
                          "peak_memory_mb": host_memory_mb("VmHWM") if args.device == "cpu" else
                          max(r.peak_memory_mb for r in history),
                          "best_val_loss": min(r.val_loss for r in history), "epochs": len(history)}
            checkpoints[name] = Path(config.train.output_dir) / "best.pt"
            print(f"{name}: {rows[name]}", flush=True)
        table = score_on_test(checkpoints, data, device=args.device)
    for name in MODELS:
        rows[name]["test"] = headline(table, name)
    refs = table[table["model"].isin(["persistence", "climatology"])]
    baselines = {m: {s: float(refs[(refs["model"] == m) & (refs["score"] == s)]["value"].mean())
                     for s, _, _ in HEADLINE} for m in ("persistence", "climatology")}
    result = {"command": command("family", argv), "data": label,
              "epochs": args.epochs, "batch_size": args.batch_size, "models": rows, "references": baselines}
    output = args.output or f"benchmarks/results/family_{args.device}_{'reference' if args.reference else 'demo'}.json"
    write_json(output, result)
    print(markdown(result))
    print(f"results in {output}")


def markdown(result: dict) -> str:
    first = next(iter(result["models"]))
    lines = [f"| model | test RMSE (mm) | CSI at 10 mm | RMSE − {first} [95%] | CSI − {first} [95%] | samples/s | "
             "peak MB |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in result["models"].items():
        cells = []
        for score, _, _ in HEADLINE:
            cells.append(f"{r['test'][score]['value']:.3f}" if score in r["test"] else "–")
        for score, _, _ in HEADLINE:
            e = r["test"].get(score, {})
            cells.append(f"{e['difference']:+.3f} [{e['low']:+.3f}, {e['high']:+.3f}]" if "difference" in e else "")
        lines.append(f"| {name} | {' | '.join(cells)} | {r['samples_per_s']:.1f} | {r['peak_memory_mb']:.0f} |")
    for ref, values in result["references"].items():
        lines.append(f"| {ref} | {values['rmse']:.3f} | {values['csi@10mm']:.3f} | | | | |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
