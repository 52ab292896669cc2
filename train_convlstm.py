"""The command users know: same flags as `python -m model.train`, plus data-parallel runs (--num-gpus N)."""

from model.train import main


def _data_parallel(config):
    from tune.distributed import fit_distributed  # Ray Train: imported only for --num-gpus / --ddp-cpu-workers

    return fit_distributed(config)


if __name__ == "__main__":
    main(prog="train_convlstm.py", launcher=_data_parallel)
