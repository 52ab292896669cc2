"""Train one ConvLSTM: python -m model.train --data FILE.nc --output-dir runs/x [flags]

Every field of the config tree is a flag (python -m model.train --help lists them); --config loads a saved
YAML/JSON config and flags given on the command line override it. Data-parallel runs (--num-gpus N,
--ddp-cpu-workers N, --max-failures N) go through Ray Train, which this package does not import: the installed
convlstm-train and train_convlstm.py (tune/train.py) pass the launcher (tune.distributed) in.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from collections.abc import Callable
from pathlib import Path

from data_io import ConfigError, PreparedData
from model._main import run_cli, setup_logging
from model.config import Config, TrainConfig, add_config_flags, config_from_args, data_parallel_workers
from model.trainer import EpochRecord, fit

# Trains a config data-parallel (several processes) and returns the history, as fit() does.
Launcher = Callable[[Config, PreparedData | None], list[EpochRecord]]

log = logging.getLogger("convlstm")


def fields_help(cls: type, name: str) -> str:
    return next(f.metadata.get("help", "") for f in dataclasses.fields(cls) if f.name == name)


def parser(prog: str = "python -m model.train") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_config_flags(p)
    return p


def train_and_record(config: Config, data: PreparedData | None = None,
                     launcher: Launcher | None = None) -> list[EpochRecord]:
    """The one "train, then write metrics" flow: fit() in this process, or `launcher` for a data-parallel config;
    then OUTPUT_DIR/metrics.jsonl (one record per epoch) and a log line on the best epoch."""
    _check_launcher(config, launcher)
    history = launcher(config, data) if data_parallel_workers(config.train) > 1 else fit(config, data)
    out = Path(config.train.output_dir)
    (out / "metrics.jsonl").write_text("".join(json.dumps(r.to_dict()) + "\n" for r in history))
    best = min(history, key=lambda r: r.val_loss)
    log.info("Best epoch %d: val_loss %.4f val_rmse %.4g; checkpoints in %s", best.epoch, best.val_loss,
             best.val_rmse, out)
    return history


def _check_launcher(config: Config, launcher: Launcher | None) -> None:
    workers = data_parallel_workers(config.train)
    if workers > 1 and launcher is None:
        raise ConfigError(f"{workers} data-parallel workers (--num-gpus/--ddp-cpu-workers) run through Ray Train: "
                          "use python train_convlstm.py or the installed convlstm-train (or python -m tune.retrain) "
                          "with the same flags")


def main(argv: list[str] | None = None, prog: str = "python -m model.train", launcher: Launcher | None = None) -> None:
    def _run() -> int:
        config = config_from_args(parser(prog).parse_args(argv))
        _check_launcher(config, launcher)  # before a log file is made
        setup_logging(Path(config.train.output_dir) / "train.log", level=getattr(logging, config.train.log_level))
        for name in ("checkpoint_frequency", "validation_frequency", "max_rollout_steps"):
            if getattr(config.train, name) is not None:
                log.warning("--%s is graphcast's and not used here: %s", name.replace("_", "-"),
                            fields_help(TrainConfig, name))
        train_and_record(config, launcher=launcher)
        return 0

    run_cli(_run, prog)


if __name__ == "__main__":
    main()
