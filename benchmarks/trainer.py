"""Trainer throughput at the reference grid, with each speed option switched on in turn.

    python -m benchmarks.trainer [--epochs 3] [--output benchmarks/results/trainer.json]

Reference: 0.25 deg, 56 input channels, downstream 61x61, window 6, precipitation target, hidden [64, 64],
batch 16. Prints a table (samples/s, time per epoch, model FLOP utilisation against the card's measured
bf16 matmul rate) and writes JSON.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

import torch

from benchmarks._common import command, convlstm_train_flops, matmul_tflops, reference_file, write_json
from data_io import DataConfig, prepare
from model.config import Config, ModelConfig, TrainConfig
from model.trainer import Trainer

EAGER = dict(cuda_graphs=False)
VARIANTS = {
    # name: TrainConfig overrides; each row adds one option to the one before unless it says otherwise
    "plain (fp32, DataLoader, no options)": dict(**EAGER, use_amp=False, data_on_device="off", cudnn_benchmark=False,
                                                 num_workers=2),
    "+ bf16 autocast": dict(**EAGER, use_amp=True, data_on_device="off", cudnn_benchmark=False, num_workers=2),
    "+ data on GPU": dict(**EAGER, use_amp=True, data_on_device="on", cudnn_benchmark=False),
    "+ cuDNN autotune": dict(**EAGER, use_amp=True, data_on_device="on", cudnn_benchmark=True),
    "+ channels-last": dict(**EAGER, use_amp=True, data_on_device="on", cudnn_benchmark=True, channels_last=True),
    "+ torch.compile": dict(use_amp=True, data_on_device="on", cudnn_benchmark=True, channels_last=True, compile=True),
    "+ CUDA graphs (compile reduce-overhead)": dict(use_amp=True, data_on_device="on", cudnn_benchmark=True,
                                                    channels_last=True, compile=True, compile_mode="reduce-overhead"),
    "default path (CUDA-graphed eager steps)": dict(use_amp=True, data_on_device="on"),
    "default path, element-wise gates (--no-fused-gates)": dict(use_amp=True, data_on_device="on", fused_gates=False),
    "default path + channels-last": dict(use_amp=True, data_on_device="on", channels_last=True),
    "default path + cuDNN autotune": dict(use_amp=True, data_on_device="on", cudnn_benchmark=True),
    "default path + cuDNN autotune + channels-last": dict(use_amp=True, data_on_device="on", cudnn_benchmark=True,
                                                          channels_last=True),
    "defaults + torch.compile (no channels-last)": dict(use_amp=True, data_on_device="on", cudnn_benchmark=True,
                                                        compile=True),
}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.trainer", description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=3, help="the first epoch is warm-up and not counted")
    p.add_argument("--days", type=int, default=400)
    p.add_argument("--data", default="/tmp/convlstm_reference.nc")
    p.add_argument("--hidden-channels", type=int, nargs="+", default=[64, 64])
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--model-type", default=None, help="a --model-type preset (model/_presets.py); widths from "
                   "--hidden-channels")
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                   help="ModelConfig overrides, e.g. use_attention=false use_group_norm=false")
    p.add_argument("--upstream", action="store_true", help="include the upstream box (graphcast's settings)")
    p.add_argument("--only", nargs="*", help="variant name prefixes to run")
    p.add_argument("--output", default="benchmarks/results/trainer.json")
    args = p.parse_args(argv)

    device = torch.device("cuda")
    peak = matmul_tflops(device)
    path = args.data.replace(".nc", "_upstream.nc") if args.upstream else args.data
    data = prepare(DataConfig(data=str(reference_file(path, args.days, upstream=args.upstream)),
                              include_upstream=args.upstream))
    _, c, h, w = data.inputs.shape
    flops = convlstm_train_flops(args.hidden_channels, c, data.targets.shape[1], h * w, data.config.window_size)
    print(f"bf16 matmul: {peak:.0f} TFLOP/s; grid {h}x{w}, {c} channels; {flops / 1e9:.1f} GFLOP per training sample")

    rows = []
    for name, overrides in VARIANTS.items():
        if args.only and not any(name.startswith(o) for o in args.only):
            continue
        with tempfile.TemporaryDirectory() as out:
            config = Config(
                data=data.config,
                model=model_config(args),
                train=TrainConfig(output_dir=out, batch_size=args.batch_size, num_epochs=args.epochs,
                                  checkpoint_every=0, **overrides),
            )
            torch.cuda.reset_peak_memory_stats()
            history = Trainer(config, data, device).run()
        timed = history[1:] or history
        sps = statistics.median(r.samples_per_s for r in timed)
        row = {
            "variant": name, "samples_per_s": sps,
            "time_per_epoch_s": statistics.median(r.time_per_epoch_s for r in timed),
            "mfu": flops * sps / (peak * 1e12), "tflops": flops * sps / 1e12,
            "peak_memory_mb": max(r.peak_memory_mb for r in timed), "val_loss": history[-1].val_loss,
            "first_epoch_s": history[0].time_per_epoch_s,  # includes compilation / autotuning
            "options": overrides,
        }
        rows.append(row)
        print(f"{name:45s} {sps:9.1f} samples/s  {row['time_per_epoch_s']:7.2f} s/epoch  "
              f"{row['tflops']:6.1f} TFLOP/s  MFU {100 * row['mfu']:5.1f}%  peak {row['peak_memory_mb']:.0f} MB  "
              f"first epoch {row['first_epoch_s']:.1f} s")
    write_json(args.output, {"command": command("trainer", argv),
                             "matmul_tflops": peak, "flops_per_sample": flops, "rows": rows})


def model_config(args) -> ModelConfig:
    import yaml

    from model._presets import preset

    values = {**preset(args.model_type), "model_type": args.model_type} if args.model_type else {}
    values.update({k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in args.set)})
    return ModelConfig(**{**values, "hidden_channels": args.hidden_channels})


if __name__ == "__main__":
    main()
