"""Search options. Trainer options come from model.config; both become flags of `python -m tune.search`."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SearchConfig:
    num_samples: int = field(default=8, metadata={"help": "trials to run"})
    max_epochs: int = field(default=3, metadata={"help": "epochs per trial at most (ASHA's max_t)"})
    grace_epochs: int = field(default=1, metadata={"help": "epochs every trial runs before ASHA may stop it"})
    name: str | None = field(
        default=None, metadata={"help": "experiment name (default: a timestamp); reusing one resumes it"}
    )
    storage_path: str = field(
        default="runs", metadata={"help": "experiments live in STORAGE_PATH/NAME (shared storage on a cluster)"}
    )
    space: str | None = field(
        default=None, metadata={"help": "YAML file that replaces or narrows parts of the search space"}
    )
    baseline: list[str] | None = field(
        default=None,
        metadata={"help": "the user's own model, run first (repeatable): a preset (stacked, shallow, deep, "
                          "dual_stream, dual_stream_deep), a config file (e.g. a best_config.yaml) or none "
                          "(default: dual_stream with --data, none on the demo data)", "action": "extend"},
    )
    cpus_per_trial: float = 1.0
    gpus_per_trial: str | None = field(
        default=None,
        metadata={
            "help": "GPUs per trial; a fraction packs trials on one GPU; fit: one share for all trials, the "
                    "smallest of 1/8, 1/4, 1/2, 1 that the space's largest config fits by the memory pre-flight; "
                    "auto: per trial the smallest that its own config fits (default: fit when the cluster has "
                    "GPUs, 1 with --no-preflight, else 0)"
        },
    )
    preflight: bool | None = field(
        default=None,
        metadata={"help": "predict each config's peak memory before it launches and skip (as infeasible) those "
                          "that cannot fit their GPU share, or on CPU the host's memory over the trials at once "
                          "(default: on for GPU trials, and on CPU with --preflight-memory-mb)"},
    )
    preflight_margin: float = field(
        default=1.1, metadata={"help": "the pre-flight compares prediction x margin with the memory available "
                                       "(1.1: on an H200 it caught every real OOM and skipped 1 of 35 configs that "
                                       "fit, BENCHMARKS §11)"}
    )
    preflight_memory_mb: float | None = field(
        default=None, metadata={"help": "memory a trial may use, MB, instead of its GPU share's (or host) memory"}
    )
    objective: str = field(
        default="val_loss:min",
        metadata={"help": "metrics to optimise, METRIC[:min|max],...; several (val_loss,time_per_epoch_s) run a "
                          "multi-objective study whose Pareto set tune.report shows; ASHA stops on the first"},
    )
    mlflow: str | None = field(
        default=None,
        metadata={"help": "MLflow tracking URI (a folder or file:/path works offline): every trial's params and "
                          "per-epoch metrics, one MLflow run per trial (needs the [mlflow] extra)"},
    )
    max_concurrent_trials: int | None = None
    address: str | None = field(
        default=None, metadata={"help": "existing Ray cluster (HOST:PORT); default: start a local one"}
    )
    resume: bool = field(default=False, metadata={"help": "continue the interrupted experiment --name"})
    time_budget_s: float | None = field(
        default=None, metadata={"help": "stop starting/continuing trials after this many seconds"}
    )
    reuse_actors: bool = field(
        default=True, metadata={"help": "run the next trial in a finished trial's warm process (see BENCHMARKS.md)"}
    )
    max_failures: int = field(
        default=2, metadata={"help": "retries of a trial whose worker died, from its last checkpoint"}
    )
