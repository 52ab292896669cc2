"""Search ConvLSTM configs with Ray Tune + Optuna: python -m tune.search --device auto [flags]

With no --data it searches on the built-in demo dataset. Every trainer flag (python -m model.train --help)
can be given here to fix it for all trials; a searched key given as a flag is removed from the space.
Results: STORAGE_PATH/NAME/{trials.csv, best_config.yaml, optuna.db} and Ray's trial folders.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
from pathlib import Path


from data_io import ConfigError, prepare, user_cache_dir
from model._cli import add_dataclass_flags, build
from model._main import run_cli, setup_logging
from model.config import add_config_flags, config_from_args
from tune import _baseline
from tune.config import SearchConfig
from tune.experiment import Experiment
from tune.space import NOT_SEARCHABLE, checked, load_space

log = logging.getLogger("convlstm")

# Trials resume from Tune checkpoints and write into their own folders; num_epochs is --max-epochs here; a trial's
# devices come from --gpus-per-trial (data-parallel training is for the retrain: python -m tune.retrain --num-gpus);
# --max-failures here is the search's own (retries of a trial), not the data-parallel trainer's.
EXCLUDED_TRAINER_FLAGS = NOT_SEARCHABLE | {"max_failures"}


def parser(prog: str = "python -m tune.search") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_dataclass_flags(p, SearchConfig)
    add_config_flags(p, exclude=EXCLUDED_TRAINER_FLAGS)
    return p


def demo_path() -> Path:
    """The demo dataset, written once into the user's cache folder."""
    from data_io.demo import write_demo

    path = user_cache_dir() / "demo_seed0.nc"
    if not path.is_file():
        log.info("Writing the demo dataset to %s (once)", path)
        write_demo(path, seed=0)
    return path


def main(argv: list[str] | None = None, prog: str = "python -m tune.search") -> None:
    run_cli(lambda: run(argv, prog), prog)


def run(argv: list[str] | None = None, prog: str = "python -m tune.search", callbacks: list | None = None) -> int:
    ns = parser(prog).parse_args(argv)
    search_keys = {f for f in SearchConfig.__dataclass_fields__}
    search = build(SearchConfig, {k: v for k, v in vars(ns).items() if k in search_keys}, "search flags")
    _validate(search)
    trainer_ns = argparse.Namespace(**{k: v for k, v in vars(ns).items() if k not in search_keys})
    fixed = frozenset(vars(trainer_ns))  # a searched key given as a flag is fixed for every trial

    name = search.name or dt.datetime.now().strftime("search-%Y%m%d-%H%M%S")
    experiment = Path(search.storage_path).resolve() / name
    setup_logging()
    resuming = _resuming(search, experiment)

    if resuming:
        saved = Experiment(experiment).search()
        base = saved["config"]
        space_spec = checked(saved["space"], str(experiment / "search.yaml"), base)  # also an older folder's form
        baselines = {}  # a resumed study has its baselines already
        log.info("Resuming %s", experiment)
    else:
        config = config_from_args(trainer_ns, base={"num_workers": 0})
        demo = config.data.data is None
        if demo:
            config.data.data = str(demo_path())
            log.info("No --data given: searching on the demo dataset %s", config.data.data)
        config.train.num_epochs = search.max_epochs
        base = config.to_dict()
        space_spec = load_space(search.space, base, fixed)
        baselines = _baseline.resolve(_baseline.requested(search.baseline, demo), base)

    setup_logging(experiment / "search.log")
    from tune._runner import run_search  # imports Ray: after the cheap argument checks

    data = prepare(build_data_config(base))
    return run_search(search, experiment, base, space_spec, data, resuming, callbacks, baselines=baselines)


def build_data_config(base: dict):
    from data_io import DataConfig

    return build(DataConfig, base["data"], "data config")


def _validate(search: SearchConfig) -> None:
    for name in ("num_samples", "max_epochs", "grace_epochs"):
        if getattr(search, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, but got {getattr(search, name)}")
    if search.grace_epochs > search.max_epochs:
        raise ConfigError(f"--grace-epochs {search.grace_epochs} is more than --max-epochs {search.max_epochs}; "
                          "lower it")
    from tune._objective import parse
    from tune._tracking import check

    parse(search.objective)  # refuses an unknown metric or mode before any Ray start
    check(search.mlflow)
    if search.baseline is not None:
        _baseline.requested(search.baseline, demo=False)  # the names, before the demo data is written
    if search.cpus_per_trial <= 0:
        raise ConfigError(f"--cpus-per-trial must be positive, but got {search.cpus_per_trial}")
    if search.gpus_per_trial not in (None, "auto", "fit"):
        try:
            ok = float(search.gpus_per_trial) >= 0
        except ValueError:
            ok = False
        if not ok:
            raise ConfigError(f"--gpus-per-trial must be a number of 0 or more, auto or fit, but got "
                              f"{search.gpus_per_trial}")
    if not search.preflight_margin > 0:
        raise ConfigError(f"--preflight-margin must be positive (1.1 = 10% headroom), but got "
                          f"{search.preflight_margin}")
    if search.preflight_memory_mb is not None and not search.preflight_memory_mb > 0:
        raise ConfigError(f"--preflight-memory-mb must be positive, but got {search.preflight_memory_mb}")


def _resuming(search: SearchConfig, experiment: Path) -> bool:
    is_experiment = Experiment(experiment).is_search()
    if search.resume and not is_experiment:
        raise ConfigError(
            f"--resume: {experiment} is not a search experiment (no search.yaml); check --name and --storage-path"
        )
    if is_experiment and not search.resume:
        log.info("%s exists: resuming it (use another --name for a new search)", experiment)
    return is_experiment


if __name__ == "__main__":
    main()
