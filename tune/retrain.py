"""Train a search's best configs fully, then score them on the test split: python -m tune.retrain runs/<name> [flags]

By default (--top-k 3) the 3 best trials of the search and its best baseline (tune.search --baseline) are trained
again from scratch alike, with the same fit() as python -m model.train: --num-epochs (default 100), early stopping,
checkpoints; each in runs/<name>/retrain/<label>/. The one with the lowest validation loss is copied into
--output-dir (default: runs/<name>/best/), and all are scored on the test split with the verification table
(best/comparison/metrics.md: RMSE, CSI, ..., each against the baseline with a block-bootstrap 95% interval);
best/metrics.md ends with whether the pick beat the baseline and by how much. --trial ID retrains that one trial
instead (as python -m tune.report lists them). Every trainer flag overrides the chosen configs (e.g. --data FILE
for a folder copied from another machine). best/ also holds the pick's test-split evaluation, the same as
python -m model.evaluate (against persistence and climatology): metrics.json, metrics.md, metrics.csv, plots/, maps/.

--num-gpus N trains data-parallel on N GPUs through Ray Train (tune/distributed.py), on this machine or, with
--address, on a running Ray cluster; the effective batch stays the searched one: each GPU runs whole searched
micro-batches when the accumulation steps divide by N, else batch/N of every micro-batch. --ddp-cpu-workers N
does the same on CPU processes.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import yaml

from data_io import ConfigError, DataError, data_label, prepare, sources
from model._cli import load_config_file
from model._main import run_cli, setup_logging
from model.config import TrainConfig, add_config_flags, config_from_args
from model import checkpoint as ckpt_io
from model.evaluate import EvalConfig, evaluate
from model.train import train_and_record
from tune import _objective
from tune import experiment as ex
from tune._table import load_trials
from tune._topk import COMPARISON_DIR
from tune.outcome import INFEASIBLE

log = logging.getLogger("convlstm")


def parser(prog: str = "python -m tune.retrain") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 2)[2])
    p.add_argument("experiment", help="the search's folder: STORAGE_PATH/NAME")
    p.add_argument("--trial", metavar="ID", help="retrain this one trial's config instead of the top K")
    p.add_argument("--pick", metavar="RULE",
                   help="choose from the Pareto set of a multi-objective search: 'fastest-within P%%' is the trial "
                        "with the lowest time per epoch whose first objective is within P%% of the best")
    p.add_argument("--top-k", type=int, default=3, metavar="K",
                   help="retrain the K best trials and the best baseline alike, keep the best on validation in "
                        "OUTPUT_DIR and compare them all on the test split (default: 3)")
    p.add_argument("--num-cases", type=int, default=3, help="test windows drawn as maps (default: 3)")
    p.add_argument("--address", help="Ray cluster (HOST:PORT) for --num-gpus / --ddp-cpu-workers (default: local)")
    p.add_argument("--storage-path", help="Ray Train's checkpoint storage for data-parallel runs: shared storage "
                   "(NFS path, s3://, gs://) on a multi-node cluster (default: OUTPUT_DIR/ray_train)")
    add_config_flags(p)
    return p


def main(argv: list[str] | None = None, prog: str = "python -m tune.retrain") -> None:
    run_cli(lambda: run(argv, prog), prog)


def run(argv: list[str] | None = None, prog: str = "python -m tune.retrain") -> int:
    ns = parser(prog).parse_args(argv)
    experiment = Path(ns.experiment)
    ex.Experiment(experiment).search()  # refuses a folder that is not a search experiment
    if ns.pick and ns.trial:
        raise ConfigError("--pick and --trial both choose the trial; pass one of them")
    if ns.top_k < 1:
        raise ConfigError(f"--top-k must be a positive integer, but got {ns.top_k}")
    trial = ns.pick and picked_trial(experiment, ns.pick) or ns.trial
    base, source = chosen_config(experiment, trial)
    base["train"]["output_dir"] = str(experiment / ex.BEST_DIR)
    config = _config(ns, base)
    out = Path(config.train.output_dir)
    setup_logging(out / "retrain.log")

    def data_parallel(config, data):
        from tune.distributed import fit_distributed

        return fit_distributed(config, data, address=ns.address, storage_path=ns.storage_path)

    comparison = None
    if trial is None:
        from tune._topk import run_top_k

        def make_config(nested: dict):  # the retrain's flags over each candidate, but its own folder
            folder = nested["train"]["output_dir"]
            cand = _config(ns, nested)
            cand.train.output_dir = folder
            return cand

        picked, comparison = run_top_k(experiment, ns.top_k, out, make_config,
                                       lambda c, d: train_and_record(c, d, launcher=data_parallel),
                                       config.train.device)
        source = f"{picked} of {experiment.name}, picked by validation among the top {ns.top_k} and the baseline"
        config = ckpt_io.config_from_checkpoint(ckpt_io.load(out / "best.pt"))
        config.train.output_dir = str(out)
        data = prepare(config.data)
    else:
        log.info("Retraining %s for up to %d epochs into %s", source, config.train.num_epochs, out)
        data = prepare(config.data)
        train_and_record(config, data, launcher=data_parallel)
    (out / "config.yaml").write_text(f"# {source}\n" + yaml.safe_dump(config.to_dict(), sort_keys=False))
    log.info("Scoring %s on the test split", out / "best.pt")

    evaluate(EvalConfig(checkpoint=[str(out / "best.pt")], name=["model"], output_dir=str(out),
                        cases=ns.num_cases, batch_size=config.train.batch_size, device=config.train.device),
             data, about={"config": source})
    if comparison is not None:
        lines = "\n".join(f"- {line}" for line in comparison["lines"])
        against = (f"\n## Against the baseline (test split)\n\n{lines}\n\n"
                   f"The verification table of every retrained candidate: {out / COMPARISON_DIR / 'metrics.md'}\n")
        with open(out / "metrics.md", "a") as f:
            f.write(against)
        print(against)
    return 0


def picked_trial(experiment: Path, rule: str) -> str:
    """The trial id --pick RULE chooses from the search's Pareto set (tune/_objective.pick)."""
    objectives = _objective.of_experiment(experiment)
    row = _objective.pick(_objective.with_metrics(load_trials(experiment), objectives), objectives, rule)
    log.info("--pick %s: trial %s (%s)", rule, row["trial_id"],
             ", ".join(f"{o.metric} {row[o.metric]:.4g}" for o in objectives))
    return str(row["trial_id"])


def _config(ns: argparse.Namespace, base: dict):
    """The retrain's flags over `base`, its data checked."""
    config = config_from_args(ns, base=base)
    try:
        sources(config.data.data)
    except DataError as exc:
        raise ConfigError(f"the search's data {data_label(config.data.data)} is not there (a copied experiment?) "
                          f"({exc}); pass --data FILE") from None
    return config


def chosen_config(experiment: Path, trial: str | None) -> tuple[dict, str]:
    """The nested config dict to retrain (num_epochs back to the trainer's default) and where it came from."""
    best_file = experiment / ex.BEST_CONFIG
    if trial is None and best_file.is_file():
        config = load_config_file(str(best_file))
        config.setdefault("train", {})
        return config, f"best config of {experiment.name} ({best_file.name})"
    trials = load_trials(experiment)
    if trial is None:  # a search still running has no best_config.yaml yet: take the best trial so far
        row = ex.best_trial(trials)
        if row is None:
            raise ConfigError(f"{experiment}: no best_config.yaml and no trial has finished an epoch yet; "
                              "wait for the search, or pass --trial ID")
    else:
        matches = trials[trials["trial_id"].astype(str).str.startswith(trial)]
        if len(matches) != 1:
            known = ", ".join(trials["trial_id"].astype(str))
            raise ConfigError(f"--trial {trial}: {'no' if matches.empty else 'more than one'} trial of {experiment} "
                              f"matches; its trials are {known} (python -m tune.report {experiment})")
        row = matches.iloc[0]
        if row["status"] in INFEASIBLE:
            log.warning("Trial %s ended %s in the search; it may again", row["trial_id"], row["status"])
    config = ex.Experiment(experiment).trial_config(Path(row["trial_dir"])).to_dict()
    config["train"]["num_epochs"] = TrainConfig().num_epochs  # the search capped it at --max-epochs
    val = row["val_loss"]
    score = f"val_loss {val:.4f}" if isinstance(val, float) and val == val else f"status {row['status']}"
    return config, f"trial {row['trial_id']} of {experiment.name} ({score} in the search)"


if __name__ == "__main__":
    main()
