"""Shared by the benchmarks: the reference-grid dataset, the card's measured matmul rate, FLOP counts."""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import torch

from data_io.demo import REFERENCE_LEVELS, make_demo


def reference_file(path: str | Path, days: int = 400, upstream: bool = False, seed: int = 0,
                   resolution: float = 0.25) -> Path:
    """Reference schema (56 channels) at 0.25 deg (or `resolution`), cropped to the boxes the run needs to keep it
    small; `seed` draws another file of the same generator."""
    path = Path(path)
    if not path.is_file():
        lat, lon = ((25.0, 50.0), (70.0, 125.0)) if upstream else ((25.0, 40.0), (110.0, 125.0))
        ds = make_demo(seed=seed, days=days, resolution=resolution, levels=REFERENCE_LEVELS, lat_range=lat,
                       lon_range=lon)
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.to_netcdf(path, engine="netcdf4")
    return path


def matmul_tflops(device: torch.device, n: int = 8192, reps: int = 20) -> float:
    """The card's measured dense bf16 rate, the denominator of model FLOP utilisation."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize(device)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        a @ b
    end.record()
    torch.cuda.synchronize(device)
    return 2 * n**3 * reps / (start.elapsed_time(end) / 1e3) / 1e12


def convlstm_train_flops(hidden: list[int], in_ch: int, out_ch: int, hw: int, window: int, kernel: int = 3,
                         forecast_steps: int = 1) -> float:
    """FLOPs of one training sample: gate convolutions and head, forward x3 (backward ~ 2x forward)."""
    widths = [in_ch, *hidden]
    per_step = sum(2 * (widths[i] + widths[i + 1]) * kernel**2 * 4 * widths[i + 1] * hw for i in range(len(hidden)))
    steps = window + forecast_steps - 1
    head = 2 * hidden[-1] * out_ch * hw * forecast_steps
    return 3.0 * (per_step * steps + head)


def command(module: str, argv: list[str] | None) -> str:
    """The command line a results file records: `argv` when main() was called with one (an empty list included),
    else this process's own."""
    return " ".join(["python -m benchmarks." + module, *(sys.argv[1:] if argv is None else argv)])


def machine() -> dict:
    info = {"host": platform.node(), "python": platform.python_version(), "torch": torch.__version__}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpus"] = torch.cuda.device_count()
    info["cpus"] = __import__("os").cpu_count()
    return info


def write_json(path: str | Path, payload: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps({"machine": machine(), "time": time.strftime("%Y-%m-%d %H:%M:%S"), **payload},
                                     indent=2))
