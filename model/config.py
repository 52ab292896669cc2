"""The config tree (data, model, training). Flags, checkpoints and the search all derive from it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

from data_io import ConfigError, DataConfig


ModelType = Literal["stacked", "shallow", "deep", "dual_stream", "dual_stream_deep"]


@dataclass
class ModelConfig:
    """The architecture (model/convlstm.py). The defaults are the plain stacked ConvLSTM; model_type names a preset
    of these fields (model/_presets.py, graphcast's four model types), and fields given explicitly override it."""

    model_type: ModelType = field(
        default="stacked",
        metadata={"help": "named preset of the fields below: stacked (the plain model) or graphcast's shallow, deep, "
                          "dual_stream, dual_stream_deep; fields given explicitly override the preset"},
    )
    hidden_channels: list[int] = field(
        default_factory=lambda: [16, 32], metadata={"help": "ConvLSTM width per layer; one number per layer"}
    )
    kernel_size: int = field(default=3, metadata={"help": "odd kernel size of every gate convolution"})
    topology: Literal["stacked", "unet"] = field(
        default="stacked",
        metadata={"help": "stacked: every layer on the full grid; unet: each layer at half the resolution of the one "
                          "below, then a decoder with skip connections back up"},
    )
    upstream_fusion: Literal["input", "bottleneck"] = field(
        default="input",
        metadata={"help": "where the upstream stream joins: the downstream input at every step, or the bottleneck "
                          "(graphcast's dual stream)"},
    )
    use_attention: bool = field(
        default=False,
        metadata={"help": "self-attention on the bottleneck's output", "aliases": {"--no-attention": False}},
    )
    use_group_norm: bool = field(
        default=False, metadata={"help": "GroupNorm on the gates inside every ConvLSTM cell",
                                 "aliases": {"--no-group-norm": False}}
    )
    use_batch_norm: bool = field(
        default=False, metadata={"help": "BatchNorm on every layer's output (graphcast: not for small batches)",
                                 "aliases": {"--no-batch-norm": False}}
    )
    dropout_rate: float = field(default=0.0, metadata={"help": "dropout probability (0 = none)"})
    use_spatial_dropout: bool = field(
        default=True, metadata={"help": "drop whole channels (Dropout2d) rather than single values",
                                "aliases": {"--no-spatial-dropout": False}}
    )
    dropout_levels: Literal["all", "bottleneck"] = field(
        default="all",
        metadata={"help": "all: the rate below the bottleneck, 1.5x at it, 0.5x in the decoder (graphcast's deep "
                          "models); bottleneck: there only (graphcast's dual_stream)"},
    )


@dataclass
class TrainConfig:
    output_dir: str = field(default="runs/train", metadata={"help": "checkpoints and the metrics log go here"})
    device: Literal["auto", "cuda", "mps", "cpu"] = field(
        default="auto", metadata={"help": "auto = cuda, then mps, then cpu"}
    )
    batch_size: int = 4
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "micro-batches per optimizer step (effective batch = batch x steps)"}
    )
    num_epochs: int = 100
    learning_rate: float = 1e-4
    weight_decay: float = 1e-5
    gradient_clip_norm: float = field(default=1.0, metadata={"help": "0 turns clipping off"})
    early_stopping_patience: int = field(default=10, metadata={"help": "epochs without a better val loss"})
    seed: int = 42
    num_workers: int = field(default=2, metadata={"help": "DataLoader worker processes (0 = main process)"})
    use_amp: bool = field(
        default=True,
        metadata={"help": "bf16 autocast on CUDA (fp16 + GradScaler where bf16 is missing), fp16 on MPS",
                  "aliases": {"--no-amp": False}},
    )
    checkpoint_every: int = field(default=10, metadata={"help": "also keep epoch_N.pt every N epochs (0 = never)"})
    resume: str | None = field(default=None, metadata={"help": "checkpoint to continue from (e.g. last.pt)"})
    reset_lr_on_resume: bool = field(
        default=False, metadata={"help": "on --resume, restart from --learning-rate instead of the checkpoint's"}
    )
    # The loss (model/losses.py): a weighted MSE over the finite targets, exact under accumulation.
    high_precip_threshold: float = field(
        default=10.0, metadata={"help": "precipitation (physical units, mm) above which a target cell is heavy rain"}
    )
    high_precip_weight: float = field(
        default=1.0, metadata={"help": "loss weight of heavy-rain cells (graphcast: 3; 1 = plain MSE)"}
    )
    precip_loss_weight: float = field(
        default=10.0,
        metadata={"help": "with other channels also predicted (--multi-variable): loss = this x precipitation MSE + "
                          "the other channels' MSE"},
    )
    # Learning-rate schedule (model/_schedule.py), stepped once per epoch.
    lr_scheduler: Literal["none", "plateau", "cosine"] = field(
        default="none",
        metadata={"help": "plateau: ReduceLROnPlateau on the val loss (graphcast's); cosine: cosine decay over "
                          "--num-epochs to --min-lr"},
    )
    lr_factor: float = field(default=0.9, metadata={"help": "plateau: multiply the learning rate by this"})
    lr_patience: int = field(default=20, metadata={"help": "plateau: epochs without a better val loss first"})
    min_lr: float = field(default=1e-6, metadata={"help": "the learning rate never goes below this"})
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    val_metric: str | None = field(
        default=None,
        metadata={"help": "also score the validation split each epoch with this verification score in physical units "
                          "(e.g. csi@10, rmse_skill_persistence, rmse; model.verify_table.validation_score): the "
                          "epoch record's val_metric, and the score a search optimises", "aliases": ["--metric"]},
    )
    # Graphcast's per-step cadences: accepted so its command lines run; this trainer works per epoch.
    checkpoint_frequency: int | None = field(
        default=None, metadata={"help": "graphcast's checkpoint cadence in steps; not used: checkpoints are written "
                                        "every epoch (last.pt, best.pt) and every --checkpoint-every epochs"}
    )
    validation_frequency: int | None = field(
        default=None, metadata={"help": "graphcast's validation cadence in steps; not used: validation runs every "
                                        "epoch"}
    )
    max_rollout_steps: int | None = field(
        default=None, metadata={"help": "graphcast's rolling-forecast length; not used in training: set "
                                        "--forecast-steps to train several leads, model.predict rolls forecasts"}
    )
    # Speed options (see BENCHMARKS.md for the measurements behind the defaults).
    data_on_device: Literal["auto", "on", "off"] = field(
        default="auto",
        metadata={"help": "keep the dataset on the GPU and gather batches there (auto: on CUDA when it fits)"},
    )
    compile: bool = field(default=False, metadata={"help": "torch.compile the model"})
    compile_mode: Literal["default", "reduce-overhead", "max-autotune-no-cudagraphs"] = field(
        default="reduce-overhead", metadata={"help": "torch.compile mode; reduce-overhead adds CUDA graphs"}
    )
    channels_last: bool = field(default=False, metadata={"help": "channels-last memory format on CUDA"})
    cudnn_benchmark: bool = field(default=False, metadata={"help": "cuDNN autotuning on CUDA"})
    fused_gates: bool = field(
        default=True,
        metadata={"help": "on CUDA with Triton, each ConvLSTM cell's gate arithmetic in one kernel forward and one "
                          "backward (model/_gates.py); off: PyTorch's element-wise ops (the same maths)"},
    )
    cuda_graphs: bool = field(
        default=True,
        metadata={"help": "on CUDA, capture each eager train/validation step once per shape as a CUDA graph and "
                          "replay it (exact; not under DDP or --compile)"},
    )
    # Data-parallel training (tune/distributed.py, Ray Train): one worker process per GPU, on one node or several.
    num_gpus: int = field(
        default=0,
        metadata={"help": "train data-parallel on this many GPUs through Ray Train, one worker each (0 or 1: in this "
                          "process); the effective batch is kept: each worker runs whole micro-batches when "
                          "--gradient-accumulation-steps divides by N, else batch/N of every micro-batch"},
    )
    ddp_cpu_workers: int = field(
        default=0,
        metadata={"help": "the same on this many CPU worker processes (gloo backend) instead of GPUs"},
    )
    max_failures: int = field(
        default=1,
        metadata={"help": "data-parallel runs: restart the worker group from its last checkpoint after up to this "
                          "many worker failures (0 = fail at the first)"},
    )


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> None:
        t, m = self.train, self.model
        for name in ("batch_size", "num_epochs", "gradient_accumulation_steps"):
            if getattr(t, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, but got {getattr(t, name)}")
        if t.learning_rate <= 0:
            raise ConfigError(f"--learning-rate must be positive, but got {t.learning_rate}")
        if t.num_workers < 0:
            raise ConfigError(f"--num-workers must be 0 or more, but got {t.num_workers}")
        if not m.hidden_channels or any(h < 1 for h in m.hidden_channels):
            raise ConfigError(f"--hidden-channels needs positive widths, one per layer, but got {m.hidden_channels}")
        if m.kernel_size < 1 or m.kernel_size % 2 == 0:
            raise ConfigError(f"--kernel-size must be odd and positive, but got {m.kernel_size}")
        if m.topology == "unet" and len(m.hidden_channels) < 2:
            raise ConfigError(f"--topology unet needs at least 2 --hidden-channels (levels), but got "
                              f"{m.hidden_channels}; add a level or use --topology stacked")
        if not 0 <= m.dropout_rate < 1:
            raise ConfigError(f"--dropout-rate must be in [0, 1), but got {m.dropout_rate}")
        if t.high_precip_weight < 1 or t.high_precip_threshold < 0 or t.precip_loss_weight <= 0:
            raise ConfigError(f"--high-precip-weight must be >= 1, --high-precip-threshold >= 0 and "
                              f"--precip-loss-weight > 0, but got {t.high_precip_weight}, {t.high_precip_threshold}, "
                              f"{t.precip_loss_weight}")
        if not 0 < t.lr_factor < 1 or t.lr_patience < 0 or t.min_lr < 0:
            raise ConfigError(f"--lr-factor must be in (0, 1), --lr-patience and --min-lr >= 0, but got "
                              f"{t.lr_factor}, {t.lr_patience}, {t.min_lr}")
        for name in ("checkpoint_frequency", "validation_frequency", "max_rollout_steps"):
            if getattr(t, name) is not None and getattr(t, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, but got {getattr(t, name)}")
        if t.num_gpus < 0 or t.ddp_cpu_workers < 0:
            raise ConfigError(f"--num-gpus and --ddp-cpu-workers must be 0 or more, but got {t.num_gpus} and "
                              f"{t.ddp_cpu_workers}")
        if t.val_metric is not None:
            metric_direction(t.val_metric)  # refuses an unknown score before any training
            if t.val_metric.split("@")[0] in ("acc", "rmse_skill_climatology"):
                raise ConfigError(f"--metric {t.val_metric}: validation scores against persistence only (no "
                                  "climatology is built per epoch); use rmse_skill_persistence, rmse, corr or csi@MM")
        if t.max_failures < 0:
            raise ConfigError(f"--max-failures must be 0 or more, but got {t.max_failures}")
        if t.num_gpus > 1 and t.ddp_cpu_workers > 1:
            raise ConfigError(f"--num-gpus {t.num_gpus} and --ddp-cpu-workers {t.ddp_cpu_workers}: pick one")
        workers = data_parallel_workers(t)
        if workers > 1:
            per_worker_batch(t, workers)  # refuses an effective batch that does not share out


def metric_direction(name: str) -> str:
    """"max" or "min": how a search optimises validation metric `name`; a ConfigError naming --metric if unknown."""
    from model.verify_table import higher_is_better

    try:
        return "max" if higher_is_better(name) else "min"
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"--metric {name}: {exc}") from None


def data_parallel_workers(t: TrainConfig) -> int:
    """Worker processes of a data-parallel run; 1 = train in this process."""
    return max(1, t.num_gpus, t.ddp_cpu_workers)


def per_worker_batch(t: TrainConfig, workers: int) -> tuple[int, int]:
    """(micro-batch, micro-batches per optimizer step) of each of `workers` data-parallel workers.

    Whole micro-batches when the accumulation steps divide by N (each GPU keeps the searched micro-batch), else
    batch/N windows of every one (model/batches.shard_steps); the effective batch is the same either way.
    """
    accumulation = t.gradient_accumulation_steps
    if accumulation % workers == 0:
        return t.batch_size, accumulation // workers
    if t.batch_size % workers == 0:
        return t.batch_size // workers, accumulation
    raise ConfigError(
        f"--batch-size {t.batch_size} with --gradient-accumulation-steps {accumulation} does not split over {workers} "
        f"data-parallel workers: make the accumulation steps a multiple of {workers} (each worker then runs whole "
        f"micro-batches) or the batch size a multiple of {workers} (each takes batch/N of every one)"
    )


SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}


def add_config_flags(parser, exclude: set[str] = frozenset()) -> None:
    """--config FILE plus one flag per field of every section."""
    from model._cli import add_dataclass_flags

    parser.add_argument("--config", default=None, help="YAML/JSON config (e.g. a best_config.yaml); flags override it")
    for cls in SECTIONS.values():
        add_dataclass_flags(parser, cls, exclude)


def config_from_args(ns, base: dict | None = None) -> Config:
    """Defaults <- base dict <- --config file <- flags given on the command line."""
    from model._cli import build, load_config_file

    nested: dict[str, dict] = {name: {} for name in SECTIONS}
    sources = [(base or {}, "config")]
    if getattr(ns, "config", None):
        sources.append((load_config_file(ns.config), f"--config {ns.config}"))
    for values, where in sources:
        _merge(nested, values, where)
    given = {k: v for k, v in vars(ns).items() if k != "config"}
    _merge(nested, given, "flags", ignore_unknown=True)
    config = build(Config, nested, "config")
    config.validate()
    return config


def _merge(nested: dict[str, dict], values: dict, where: str, ignore_unknown: bool = False) -> None:
    """Put one source's values over `nested`. A model_type in the source brings its preset (model/_presets.py)
    first: the source's own keys beat its preset, and the preset beats earlier sources."""
    from model._cli import section_fields
    from model._presets import expand_preset

    values = expand_preset(values, where, asdict(ModelConfig()))
    owners = {name: sec for sec, cls in SECTIONS.items() for name in section_fields(cls)}
    for key, value in values.items():
        if key in SECTIONS and isinstance(value, dict):
            unknown = sorted(set(value) - section_fields(SECTIONS[key]))
            if unknown and not ignore_unknown:
                raise ConfigError(
                    f"{where}: unknown key(s) {unknown} in section '{key}'; "
                    f"known keys are {sorted(section_fields(SECTIONS[key]))}"
                )
            nested[key].update(value)
        elif key in owners:
            nested[owners[key]][key] = value
        elif not ignore_unknown:
            raise ConfigError(
                f"{where}: unknown key {key!r}; use the flag names without dashes (e.g. batch_size) "
                f"or sections {list(SECTIONS)}"
            )
