"""The installed convlstm-train and train_convlstm.py: python -m model.train's flags, plus data-parallel runs
(--num-gpus N, --ddp-cpu-workers N, --max-failures N) through Ray Train."""

from __future__ import annotations

from data_io import PreparedData
from model.config import Config
from model.train import main as train_main
from model.trainer import EpochRecord


def data_parallel(config: Config, data: PreparedData | None = None) -> list[EpochRecord]:
    from tune.distributed import fit_distributed  # Ray: imported only when a run is data-parallel

    return fit_distributed(config, data)


def main(argv: list[str] | None = None, prog: str = "convlstm-train") -> None:
    train_main(argv, prog=prog, launcher=data_parallel)


if __name__ == "__main__":
    main(prog="python -m tune.train")
