"""The data part of the config tree. Every field is also a command-line flag."""

from __future__ import annotations

from dataclasses import dataclass, field

from data_io._errors import ConfigError

DEFAULT_LOG_VARIABLES = ["precipitation", "tp", "pr"]


@dataclass
class DataConfig:
    data: str | list[str] | None = field(
        default=None,
        metadata={"help": "what to train on: a netCDF file, several files, a quoted glob ('era5/*.nc'), a folder of "
                          "netCDF files or a Zarr store; files split in time are joined, files split by variable "
                          "merged"},
    )
    variables: list[str] | None = field(
        default=None, metadata={"help": "input variables (default: every 3-D/4-D variable)"}
    )
    target: list[str] | None = field(
        default=None,
        metadata={"help": "predicted variable(s) (default: precipitation when present, else every input)"},
    )
    log_variables: list[str] = field(
        default_factory=lambda: list(DEFAULT_LOG_VARIABLES),
        metadata={"help": "precipitation-like variables: clipped at 0 and log1p'd before z-scoring"},
    )
    # The target box; when the file does not cover this default box the whole grid is used.
    downstream_lat_min: float = 25.0
    downstream_lat_max: float = 40.0
    downstream_lon_min: float = 110.0
    downstream_lon_max: float = 125.0
    # The box whose weather drifts into the target box (read only with --include-upstream).
    upstream_lat_min: float = 25.0
    upstream_lat_max: float = 50.0
    upstream_lon_min: float = 70.0
    upstream_lon_max: float = 110.0
    include_upstream: bool = field(
        default=False, metadata={"help": "read the upstream box with its own encoder stream"}
    )
    train_ratio: float = 0.7
    val_ratio: float = 0.15
    test_start_date: str | None = field(
        default=None, metadata={"help": "first date of the test split (overrides the ratios for test); graphcast's "
                                        "--trainval-end-date is the same date", "aliases": ["--trainval-end-date"]}
    )
    multi_variable: bool = field(
        default=False, metadata={"help": "predict every input channel (graphcast's multi-variable mode)"}
    )
    window_size: int = field(default=6, metadata={"help": "past time steps the model sees"})
    target_offset: int = field(default=1, metadata={"help": "steps from the last input to the first forecast"})
    forecast_steps: int = field(default=1, metadata={"help": "future steps forecast per sample"})
    # Large files: see data_io/cache.py. From 64 MB of cropped arrays the cache's build peaks lower than loading
    # into memory and takes about as long; every later run maps it in ~1 ms (python -m benchmarks.cache,
    # benchmarks/results/cache_cpu_run1.json).
    cache_threshold_mb: float = field(
        default=64.0,
        metadata={"help": "cropped arrays larger than this are streamed into a memory-mapped on-disk cache "
                          "instead of memory (0 = always)"},
    )
    cache_dir: str | None = field(
        default=None,
        metadata={"help": "folder of that cache (default: $CONVLSTM_TUNE_CACHE, else .convlstm-cache next to the "
                          "data file, else ~/.cache/convlstm-tune)"},
    )


    def __post_init__(self) -> None:
        # One item is the plain string it always was (checkpoints, messages, the cache folder's name).
        if isinstance(self.data, (list, tuple)):
            self.data = str(self.data[0]) if len(self.data) == 1 else [str(d) for d in self.data]
        elif self.data is not None:
            self.data = str(self.data)


def validate(cfg: DataConfig) -> None:
    """Every check of a DataConfig on its own (the file's checks come when it is read)."""
    for name in ("window_size", "target_offset", "forecast_steps"):
        if getattr(cfg, name) < 1:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag} must be at least 1, but got {getattr(cfg, name)}")
    if not (0 < cfg.train_ratio < 1 and 0 < cfg.val_ratio < 1 and cfg.train_ratio + cfg.val_ratio < 1):
        raise ConfigError(
            f"--train-ratio {cfg.train_ratio} and --val-ratio {cfg.val_ratio} must be in (0, 1) "
            "and sum to less than 1 (the rest is the test split)"
        )
    if cfg.cache_threshold_mb < 0:
        raise ConfigError(f"--cache-threshold-mb must be 0 or more, but got {cfg.cache_threshold_mb}")
