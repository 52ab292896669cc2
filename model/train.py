"""Train one ConvLSTM: python -m model.train --data FILE.nc --output-dir runs/x [flags]

Every field of the config tree is a flag (python -m model.train --help lists them); --config loads a saved
YAML/JSON config and flags given on the command line override it. Data-parallel runs (--num-gpus N,
--ddp-cpu-workers N) go through Ray Train, which this package does not import: train_convlstm.py passes the
launcher (tune.distributed) in.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from collections.abc import Callable
from pathlib import Path

from data_io import ConfigError
from model._main import run_cli, setup_logging
from model.config import Config, TrainConfig, add_config_flags, config_from_args, data_parallel_workers
from model.trainer import EpochRecord, fit

# Trains a config data-parallel (several processes) and returns the history, as fit() does.
Launcher = Callable[[Config], list[EpochRecord]]

log = logging.getLogger("convlstm")


def fields_help(cls: type, name: str) -> str:
    return next(f.metadata.get("help", "") for f in dataclasses.fields(cls) if f.name == name)


def parser(prog: str = "python -m model.train") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_config_flags(p)
    return p


def main(argv: list[str] | None = None, prog: str = "python -m model.train", launcher: Launcher | None = None) -> None:
    def _run() -> int:
        config = config_from_args(parser(prog).parse_args(argv))
        workers = data_parallel_workers(config.train)
        if workers > 1 and launcher is None:
            raise ConfigError(f"{workers} data-parallel workers (--num-gpus/--ddp-cpu-workers) run through Ray Train: "
                              "use python train_convlstm.py (or python -m tune.retrain) with the same flags")
        out = Path(config.train.output_dir)
        setup_logging(out / "train.log", level=getattr(logging, config.train.log_level))
        for name in ("checkpoint_frequency", "validation_frequency", "max_rollout_steps"):
            if getattr(config.train, name) is not None:
                log.warning("--%s is graphcast's and not used here: %s", name.replace("_", "-"),
                            fields_help(TrainConfig, name))
        history = launcher(config) if workers > 1 else fit(config)
        best = min(history, key=lambda r: r.val_loss)
        (out / "metrics.jsonl").write_text("".join(json.dumps(r.to_dict()) + "\n" for r in history))
        log.info("Best epoch %d: val_loss %.4f val_rmse %.4g; checkpoints in %s", best.epoch, best.val_loss,
                 best.val_rmse, out)
        return 0

    run_cli(_run, prog)


if __name__ == "__main__":
    main()
