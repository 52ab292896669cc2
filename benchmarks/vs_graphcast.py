"""Our trainer's samples/s against graphcast's own trainer (LeeTZhi/graphcast) on one file, one GPU, one run.

    python -m benchmarks.vs_graphcast --extract .graphcast        # here, where the git mirror is
    python -m benchmarks.vs_graphcast --graphcast-dir .graphcast [--days 400] [--epochs 3] [--compile]
        [--output benchmarks/results/vs_graphcast.json]

Graphcast's settings: batch 4, hidden [64, 128], the upstream box (25-50N 70-110E) beside the downstream box
(25-40N 110-125E), its dual_stream model (its default type), fp16 AMP, 2 DataLoader workers. Its train_convlstm.py
runs as a subprocess with its own flags; ours runs in-process (model.trainer.Trainer, as benchmarks/trainer.py
does) for the stacked model and for --model-type dual_stream, on the default path (CUDA-graphed eager steps on
CUDA), and with --compile also through torch.compile. The first epoch is not timed where there are two or more.

Like for like, samples/s is training samples / whole epoch (training + validation), the only time graphcast's
trainer logs ("Epoch i/N: ... time=XXs"); our training-only rate is a column of its own. Graphcast's mid-epoch
validation (every --validation-frequency steps, default 500) is pushed past the run so each epoch on both sides
is one training pass and one validation pass.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch

from benchmarks._common import command, reference_file, write_json
from data_io import ConfigError, DataConfig, prepare
from model._presets import preset
from model.config import Config, ModelConfig, TrainConfig
from model.trainer import Trainer

MIRROR = Path("/work/.mirror/LeeTZhi+graphcast/repo")
BOXES = {"downstream_lat_min": 25.0, "downstream_lat_max": 40.0, "downstream_lon_min": 110.0,
         "downstream_lon_max": 125.0, "upstream_lat_min": 25.0, "upstream_lat_max": 50.0,
         "upstream_lon_min": 70.0, "upstream_lon_max": 110.0}
PATCHES = ("convlstm/trainer.py: `verbose=True` removed from ReduceLROnPlateau (the argument is gone in current "
           "PyTorch); every torch.load call in convlstm/*.py and train_convlstm.py gets weights_only=False (its "
           "checkpoints pickle its config objects). Nothing else in graphcast's code is changed.")
# Graphcast's trainer logs this once an epoch (convlstm/trainer.py, ConvLSTMTrainer.train).
_EPOCH = re.compile(r"Epoch (\d+)/(\d+): train_loss=([-\d.naninf]+), val_loss=([-\d.naninf]+), .*time=([\d.]+)s")
_SAMPLES = re.compile(r"Training samples: (\d+)")
# Launches graphcast's script unchanged and reports the CUDA memory peak its process reached: reserved, as our
# trainer's peak_memory_mb (model/device.peak_memory_mb).
_LAUNCHER = """
import atexit, runpy, sys, torch
def _peak():
    if torch.cuda.is_available():
        print(f"GRAPHCAST_PEAK_MB {torch.cuda.max_memory_reserved() / 2**20:.1f}", flush=True)
atexit.register(_peak)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def extract(folder: Path, mirror: Path = MIRROR) -> list[str]:
    """Graphcast's convlstm/ package and train_convlstm.py from the mirror into `folder`, with the two patches."""
    if not (mirror / "HEAD").is_file():
        raise ConfigError(f"--extract: no git mirror of LeeTZhi/graphcast at {mirror}; run this where it is")
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(mirror), "archive", "HEAD", "convlstm", "train_convlstm.py"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    commit = subprocess.run(["git", "-C", str(mirror), "rev-parse", "HEAD"], check=True, capture_output=True,
                            text=True).stdout.strip()
    changed = []
    trainer = folder / "convlstm" / "trainer.py"
    text, n = re.subn(r",(\s*#[^\n]*)?\n\s*verbose=True\s*\n(\s*)\)", r",\1\n\2)", trainer.read_text())
    if n != 1:
        raise ConfigError(f"--extract: graphcast {commit[:10]}: expected one ReduceLROnPlateau(verbose=True) in "
                          f"{trainer}, found {n}; the patch needs updating for this commit")
    trainer.write_text(text)
    changed.append("convlstm/trainer.py: verbose=True removed (1)")
    for path in sorted([*folder.glob("convlstm/*.py"), folder / "train_convlstm.py"]):
        text, n = re.subn(r"torch\.load\(([^()]*)\)", r"torch.load(\1, weights_only=False)", path.read_text())
        if n:
            path.write_text(text)
            changed.append(f"{path.relative_to(folder)}: weights_only=False ({n})")
    (folder / "PROVENANCE.txt").write_text(f"LeeTZhi/graphcast {commit}\n{PATCHES}\n" + "\n".join(changed) + "\n")
    return [f"LeeTZhi/graphcast {commit}", *changed]


def graphcast_commit(folder: Path) -> str:
    provenance = folder / "PROVENANCE.txt"
    if not (folder / "train_convlstm.py").is_file() or not provenance.is_file():
        raise ConfigError(f"--graphcast-dir {folder}: no extracted graphcast code there; run "
                          f"`python -m benchmarks.vs_graphcast --extract {folder}` where the git mirror is, and "
                          f"carry that folder")
    return provenance.read_text().splitlines()[0]


def run_graphcast(folder: Path, data: Path, args: argparse.Namespace, log_path: Path) -> dict:
    flags = ["--data", str(data.resolve()), "--model-type", "dual_stream", "--include-upstream",
             "--batch-size", "4", "--hidden-channels", *map(str, args.hidden_channels), "--num-epochs",
             str(args.epochs), "--validation-frequency", str(10**9), "--device", args.device]
    for name, value in BOXES.items():
        flags += ["--" + name.replace("_", "-"), str(value)]
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-c", _LAUNCHER, "train_convlstm.py", *flags, "--output-dir", out]
        # Its own `convlstm` package first; the rest of PYTHONPATH kept for wherever the libraries come from.
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(folder.resolve()),
                                                                         os.environ.get("PYTHONPATH")]))}
        t0 = time.perf_counter()
        proc = subprocess.run(command, check=False, cwd=folder, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
        raise RuntimeError(f"graphcast's train_convlstm.py exited {proc.returncode} (full log: {log_path}):\n{tail}")
    epochs = [{"epoch": int(m[1]), "train_loss": float(m[3]), "val_loss": float(m[4]), "time_per_epoch_s": float(m[5])}
              for m in _EPOCH.finditer(proc.stdout)]
    samples = _SAMPLES.search(proc.stdout)
    if not epochs or samples is None:
        raise RuntimeError(f"graphcast's log has no epoch lines or training-sample count; see {log_path}")
    n = int(samples[1])
    timed = epochs[1:] or epochs
    peak = re.search(r"GRAPHCAST_PEAK_MB ([\d.]+)", proc.stdout)
    epoch_s = statistics.median(e["time_per_epoch_s"] for e in timed)
    return {"variant": "graphcast train_convlstm.py, dual_stream", "train_samples": n, "samples_per_s": n / epoch_s,
            "train_only_samples_per_s": None, "time_per_epoch_s": epoch_s,
            "first_epoch_s": epochs[0]["time_per_epoch_s"], "peak_memory_mb": float(peak[1]) if peak else None,
            "val_loss": epochs[-1]["val_loss"], "process_wall_s": wall, "epochs": epochs,
            "command": ["python", "train_convlstm.py", *flags, "--output-dir", "<tmp>"]}


def run_ours(data, model_type: str, compile_: bool, args: argparse.Namespace, device: torch.device,
             channels_last: bool | None = None) -> dict:
    fields = {**preset(model_type, asdict(ModelConfig())), "model_type": model_type,
              "hidden_channels": list(args.hidden_channels)}
    with tempfile.TemporaryDirectory() as out:
        # Graphcast's loss weighting and schedule, so the training does the same work.
        train = TrainConfig(output_dir=out, device=device.type, batch_size=4, num_epochs=args.epochs,
                            checkpoint_every=0, high_precip_weight=3.0, lr_scheduler="plateau", compile=compile_,
                            **({} if channels_last is None else {"channels_last": channels_last}))
        config = Config(data=data.config, model=ModelConfig(**fields), train=train)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        history = Trainer(config, data, device).run()
    n = len(data.starts("train"))
    timed = history[1:] or history
    epoch_s = statistics.median(r.time_per_epoch_s for r in timed)
    name = f"ours, {model_type}, {'torch.compile' if compile_ else 'default path'}"
    name += "" if channels_last is None else f", channels-last {'on' if channels_last else 'off'}"
    return {"variant": name, "train_samples": n, "samples_per_s": n / epoch_s,
            "train_only_samples_per_s": statistics.median(r.samples_per_s for r in timed),
            "time_per_epoch_s": epoch_s, "first_epoch_s": history[0].time_per_epoch_s,
            "peak_memory_mb": max(r.peak_memory_mb for r in timed) if device.type == "cuda" else None,
            "val_loss": history[-1].val_loss, "epochs": [r.to_dict() for r in history],
            "config": {"model": asdict(config.model), "train": asdict(config.train)}}


def _row(r: dict, base: float) -> str:
    only = r["train_only_samples_per_s"]
    peak = r["peak_memory_mb"]
    return (f"{r['variant']:42s} {r['samples_per_s']:9.2f} {'-' if only is None else f'{only:.2f}':>10} "
            f"{r['time_per_epoch_s']:9.2f} {r['first_epoch_s']:9.2f} {r['samples_per_s'] / base:8.2f}x "
            f"{'-' if peak is None else f'{peak:.0f}':>8}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.vs_graphcast", description=__doc__.split("\n")[0])
    p.add_argument("--extract", metavar="DIR", help="copy graphcast's trainer from the git mirror here and stop")
    p.add_argument("--graphcast-dir", default=".graphcast", help="the folder --extract wrote")
    p.add_argument("--days", type=int, default=400, help="days of 12-hourly data in the reference file")
    p.add_argument("--epochs", type=int, default=3, help="the first epoch is warm-up and not timed")
    p.add_argument("--hidden-channels", type=int, nargs="+", default=[64, 128], help="graphcast's: 64 128")
    p.add_argument("--data", default="/tmp/convlstm_reference_upstream.nc")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"])
    p.add_argument("--compile", action="store_true", help="also run ours through torch.compile")
    p.add_argument("--layouts", action="store_true", help="run ours with --channels-last on and off, not the default")
    p.add_argument("--output", default="benchmarks/results/vs_graphcast.json")
    args = p.parse_args(argv)
    cmd = command("vs_graphcast", argv)
    try:
        if args.extract:
            for line in extract(Path(args.extract)):
                print(line)
            return
        folder = Path(args.graphcast_dir)
        commit = graphcast_commit(folder)
        device = torch.device(args.device)
        path = reference_file(args.data, args.days, upstream=True)
        data = prepare(DataConfig(data=str(path), include_upstream=True, **BOXES))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    (_, c, h, w), up = data.inputs.shape, data.upstream.shape if data.upstream is not None else None
    print(f"{path}: {args.days} days, downstream {h}x{w}, upstream {up[-2:] if up else None}, {c} channels; "
          f"{len(data.starts('train'))} training samples; {device}")
    try:
        rows = [run_graphcast(folder, path, args, Path(args.output).with_suffix(".graphcast.log"))]
    except RuntimeError as e:  # its log's tail and the full log's path say why
        sys.exit(f"error: {e}")
    for model_type in ("stacked", "dual_stream"):
        for compile_ in (False, True) if args.compile else (False,):
            for channels_last in (False, True) if args.layouts else (None,):
                rows.append(run_ours(data, model_type, compile_, args, device, channels_last))
    base = rows[0]["samples_per_s"]
    for r in rows:
        r["speedup_vs_graphcast"] = r["samples_per_s"] / base
    print(f"\n{'':42s} {'samples/s':>9} {'train-only':>10} {'s/epoch':>9} {'1st ep s':>9} {'speed-up':>9} "
          f"{'peak MB':>8}")
    for r in rows:
        print(_row(r, base))
    write_json(args.output, {"command": cmd, "graphcast": commit, "graphcast_patches": PATCHES,
                             "settings": {"batch_size": 4, "hidden_channels": args.hidden_channels, "days": args.days,
                                          "epochs": args.epochs, "boxes": BOXES, "device": str(device),
                                          "timed_epochs": "all but the first" if args.epochs >= 2 else "the one"},
                             "samples_per_s_means": "training samples / whole epoch (training + validation)",
                             "rows": rows})
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
