"""The Ray side of the search: cluster, resources, Tuner (new or restored), and the results it leaves."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import shutil
import os
import signal
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

import optuna
import ray
import yaml
from ray import tune
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from data_io import ConfigError, DataConfig, PreparedData
from model.config import TrainConfig
from model.memory import DataShape
from tune import _objective, _preflight, _ray, _tracking
from tune import experiment as ex
from tune._baseline import BASELINE_KEY, enqueue as enqueue_baselines
from tune._searcher import OutcomeAwareOptunaSearch, close_running_trials
from tune._table import format_table, load_trials
from tune.config import SearchConfig
from tune.outcome import INFEASIBLE
from tune.space import FIELDS, define_by_run, extremes
from tune.trainable import train_trial

log = logging.getLogger("convlstm")


def run_search(
    search: SearchConfig, experiment: Path, base: dict, space: dict, data: PreparedData, resuming: bool,
    callbacks: list | None = None, baselines: dict[str, dict] | None = None,
) -> int:
    """`baselines` (tune/_baseline.py: name -> full config) run first, on top of --num-samples searched trials."""
    connected = _connect(search.address, experiment)
    gpus = _gpus_per_trial(search, base["train"]["device"])
    if not resuming:  # only now: a search refused above leaves no experiment that a rerun would resume
        ex.Experiment(experiment).write_search(base, space, asdict(search))
    smallest = _preflight.SHARES[0] if gpus in ("auto", "fit") else gpus
    concurrent = search.max_concurrent_trials or _trials_that_fit(search.cpus_per_trial, smallest)
    wanted = search.preflight if search.preflight is not None else bool(gpus) or search.preflight_memory_mb is not None
    preflight = _preflight_for(search, experiment, base, data, gpus, concurrent) if wanted else None
    if gpus == "fit":
        gpus = _fitting_share(search, space, baselines or {}, preflight)
        concurrent = search.max_concurrent_trials or _trials_that_fit(search.cpus_per_trial, gpus)
    log.info("Each trial asks Ray for %s CPU and %s GPU; up to %d trials at once", search.cpus_per_trial, gpus,
             concurrent)
    if gpus == "auto":
        resources = functools.partial(_auto_resources, cpus=search.cpus_per_trial, preflight=preflight)
    else:
        resources = {"cpu": search.cpus_per_trial, "gpu": gpus}
    # A space over data fields gets a store that prepares each distinct data config once, for every trial.
    store = DataStore.remote() if any(FIELDS[k][0] == "data" for k in space) else None
    trainable = tune.with_resources(
        tune.with_parameters(train_trial, data=data, base=base, store=store,
                             resources={"cpus": search.cpus_per_trial}),
        resources,
    )
    storage = optuna.storages.RDBStorage(f"sqlite:///{experiment / ex.OPTUNA_DB}")
    study_name = f"{experiment.name}-{_study_suffix(experiment)}"
    if resuming and tune.Tuner.can_restore(str(experiment)):
        tuner = tune.Tuner.restore(str(experiment), trainable=trainable, resume_unfinished=True,
                                   resume_errored=False, restart_errored=False)
    else:
        tuner = _new_tuner(search, experiment, trainable, space, storage, study_name, base, callbacks, concurrent,
                           baselines or {}, preflight)
    interrupted = _fit(tuner)
    # From here on a Ctrl+C would only lose the results of the trials that ran (a SIGINT after the last trial
    # ended raised in the middle of the table), or land in Ray's shutdown halfway (seen: exit -11 instead of 130).
    with _sigint_ignored():
        closed = 0 if interrupted else close_running_trials(storage, study_name)
        if closed:
            log.info("Marked %d Optuna trials that never ran to completion as FAIL", closed)
        code = _write_results(experiment, base, interrupted)
        if connected:  # a caller that was connected before (a test, a notebook) stays connected
            ray.shutdown()
    return code


@contextlib.contextmanager
def _sigint_ignored():
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _fit(tuner: tune.Tuner) -> bool:
    """Run the search; True when SIGINT interrupted it (its unfinished trials are saved for --resume).

    Tune catches the first SIGINT itself: it saves the unfinished trials, marks them TERMINATED in memory and
    returns normally, so neither the ResultGrid nor an exception tells. What it does leave: it puts back the
    SIGINT handler it found (ours), where a run that was not interrupted keeps Tune's handler installed.
    """
    tune_catches = threading.current_thread() is threading.main_thread() and not int(
        os.environ.get("TUNE_DISABLE_SIGINT_HANDLER", "0"))
    if not tune_catches:
        try:
            tuner.fit()
            return False
        except KeyboardInterrupt:
            return True

    def on_sigint(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        tuner.fit()
        return signal.getsignal(signal.SIGINT) is on_sigint
    except KeyboardInterrupt:  # a second SIGINT
        return True
    finally:
        signal.signal(signal.SIGINT, previous)


def _new_tuner(search, experiment, trainable, space, storage, study_name, base, callbacks, concurrent,
               baselines, preflight=None) -> tune.Tuner:
    objectives = _objective.parse(search.objective)
    if [(o.metric, o.mode) for o in objectives] == [("val_loss", "min")]:
        # The default objective follows --metric: the validation split's score in its direction (tune.experiment).
        key, _, direction = ex.objective(base)
        objectives = [_objective.Objective(key, direction)]
    metric, mode = _objective.ray_metric(objectives)  # lists for several objectives: a multi-objective study
    searcher = OutcomeAwareOptunaSearch(
        space=functools.partial(define_by_run, spec=space, base=base),
        metric=metric,
        mode=mode,
        sampler=optuna.samplers.TPESampler(
            seed=base["train"]["seed"], n_startup_trials=min(10, max(2, search.num_samples // 2))
        ),
        storage=storage,
        study_name=study_name,
        base=base,
        preflight=preflight,
        experiment=experiment,
    )
    enqueue_baselines(_ray.study(searcher), space, baselines)
    scheduler = _FeasibleASHA(
        time_attr="training_iteration", metric=objectives[0].metric, mode=objectives[0].mode, max_t=search.max_epochs,
        grace_period=search.grace_epochs, reduction_factor=2,
    )
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher, scheduler=scheduler, num_samples=search.num_samples + len(baselines),
            max_concurrent_trials=concurrent, time_budget_s=search.time_budget_s,
            reuse_actors=search.reuse_actors,
        ),
        run_config=tune.RunConfig(
            name=experiment.name,
            storage_path=str(experiment.parent),
            failure_config=tune.FailureConfig(max_failures=search.max_failures),
            # num_to_keep=None: with a number, every trial checkpoint that reaches it forces a snapshot of the
            # experiment state (Ray's "snapshotting has been triggered multiple times" warnings, one per epoch
            # of concurrent trials). A finished trial's checkpoints are removed by _DropCheckpoints instead.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
            verbose=1,
            callbacks=[_DropCheckpoints(), *_tracking.callbacks(search.mlflow, experiment.name), *(callbacks or [])],
        ),
    )


class _FeasibleASHA(ASHAScheduler):
    """ASHA that leaves a trial's OOM / diverged report (val_loss inf) out of its rungs: an inf there makes the
    rung's cutoff NaN or -inf (np.nanpercentile), after which that rung stops no trial at all."""

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if result.get("status") in INFEASIBLE:
            return TrialScheduler.CONTINUE  # its last report: the trial ends by itself
        decision = super().on_trial_result(tune_controller, trial, result)
        # A baseline is the yardstick: it sits in the rungs like any trial but runs all --max-epochs.
        return TrialScheduler.CONTINUE if BASELINE_KEY in (getattr(trial, "config", None) or {}) else decision

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        if result.get("status") in INFEASIBLE:
            _ray.forget_trial(self, trial.trial_id)
            return
        super().on_trial_complete(tune_controller, trial, result)


class _DropCheckpoints(tune.Callback):
    """A trial that ended needs no checkpoint: --resume restores unfinished trials only, the retrain trains from
    scratch. Keeps the disk to the running trials' checkpoints (one per epoch reported)."""

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        for path in Path(trial.path).glob("checkpoint_*"):  # the storage path: our --storage-path is a local FS
            shutil.rmtree(path, ignore_errors=True)


@ray.remote(num_cpus=0)
class DataStore:
    """Prepared data per distinct data config other than the search's own (which trials get through
    tune.with_parameters), each prepared once and put in the object store for every trial that asks. Actor calls
    run one at a time: a second trial asking for the same config waits for the first to have prepared it."""

    def __init__(self) -> None:
        self._refs: dict[str, ray.ObjectRef] = {}

    @staticmethod
    def _key(config: DataConfig) -> str:
        return json.dumps(asdict(config), sort_keys=True)

    def get(self, config: DataConfig) -> list:
        key = self._key(config)
        if key not in self._refs:
            from data_io import prepare

            logging.getLogger("convlstm").info("Preparing the data for a searched data config (once): %s", key)
            self._refs[key] = ray.put(prepare(config))
        return [self._refs[key]]  # in a list, so that the caller gets the reference, not a copy of the arrays


def _trials_that_fit(cpus: float, gpus: float) -> int:
    """How many trials the cluster can run at once. Passed as max_concurrent_trials because with a searcher
    Tune otherwise keeps only one trial pending, so a packed GPU fills one trial start-up at a time."""
    total = ray.cluster_resources()
    fit = int(total.get("CPU", 1) // cpus) if cpus else 1
    if gpus:
        fit = min(fit, int(total.get("GPU", 0) // gpus + 1e-9))
    return max(1, fit)


def _study_suffix(experiment: Path) -> str:
    """A study name unique to the experiment, stable across resumes (kept in search.yaml's folder)."""
    marker = experiment / ex.STUDY_ID
    if not marker.is_file():
        import uuid

        marker.write_text(uuid.uuid4().hex[:8])
    return marker.read_text().strip()


def _connect(address: str | None, experiment: Path) -> bool:
    """Connect to (or start) Ray; True when this call did, False when the process was already connected."""
    if ray.is_initialized():
        return False
    started = time.perf_counter()
    if address:
        ray.init(address=address, include_dashboard=False, log_to_driver=True)
    else:  # no dashboard unless asked (ray start --include-dashboard); see the README's cluster section
        ray.init(include_dashboard=False, dashboard_host="127.0.0.1")
    log.info("Ray is up (%.1f s)", time.perf_counter() - started)
    return True


def _gpus_per_trial(search: SearchConfig, device: str) -> float | str:
    """The GPU share of every trial, "fit" (one share for all, from the memory pre-flight of the space's extremes)
    or "auto" (a share per config from it)."""
    cluster_gpus = ray.cluster_resources().get("GPU", 0)
    if device == "cpu":
        return 0.0
    if search.gpus_per_trial in ("auto", "fit"):
        if cluster_gpus == 0:
            raise ConfigError(f"--gpus-per-trial {search.gpus_per_trial}: this Ray cluster has no GPUs; leave it "
                              "out to train on CPUs")
        if search.preflight is False:
            raise ConfigError(f"--gpus-per-trial {search.gpus_per_trial} needs the memory pre-flight; drop "
                              "--no-preflight")
        return search.gpus_per_trial
    if search.gpus_per_trial is None:
        if cluster_gpus < 1:
            return 0.0
        return 1.0 if search.preflight is False else "fit"
    if float(search.gpus_per_trial) > 0:
        node_max = max((n["Resources"].get("GPU", 0) for n in ray.nodes() if n.get("Alive")), default=0)
        if float(search.gpus_per_trial) > node_max:
            raise ConfigError(
                f"--gpus-per-trial {search.gpus_per_trial}: the largest node of this Ray cluster has {node_max:g} "
                "GPU(s); ask for at most that, or 0 to train on CPUs"
            )
    if device == "cuda" and cluster_gpus == 0:
        raise ConfigError("--device cuda: this Ray cluster has no GPUs; use --device auto or cpu")
    return float(search.gpus_per_trial)


def _fitting_share(search: SearchConfig, space: dict, baselines: dict[str, dict],
                   preflight: _preflight.Preflight) -> float:
    """--gpus-per-trial fit: one share for every trial, so that each can run in a finished trial's actor (shares
    per config cannot reuse each other's): the smallest of the menu that the space's largest config fits, and no
    smaller than the cluster's CPUs can fill with trials."""
    candidates = extremes(space)
    if candidates is None:
        log.info("--gpus-per-trial fit: the space has too many extremes to predict; 1 GPU per trial")
        preflight.share = 1.0
        return 1.0
    candidates += [{BASELINE_KEY: {"name": name, "config": config}} for name, config in baselines.items()]
    total = ray.cluster_resources()
    at_once = search.max_concurrent_trials or int(total.get("CPU", 1) // search.cpus_per_trial)
    share, need = preflight.fitting_share(candidates, least=total.get("GPU", 0) / max(1, at_once))
    preflight.share = share
    log.info("--gpus-per-trial fit: %g GPU per trial (the space's largest config: %.0f MB with the margin, of "
             "%.0f MB)", share, need, preflight.budget(share))
    return share


def _auto_resources(config: dict, cpus: float, preflight: _preflight.Preflight) -> dict:
    """--gpus-per-trial auto: the smallest share of the menu that this config's predicted memory fits."""
    return {"cpu": cpus, "gpu": preflight.check(config).share}


def _preflight_for(search: SearchConfig, experiment: Path, base: dict, data: PreparedData, gpus: float | str,
                   concurrent: int) -> _preflight.Preflight:
    """The pre-flight of this search: the calibration from preflight.json, or probed now on the trials' device."""
    shape = DataShape.of(data)
    configs = _preflight.probe_configs(base, shape)
    device = "cuda" if gpus else "cpu"
    key = _preflight.cache_key(shape, configs[0], device)
    accelerators = [k.split(":", 1)[1] for k in ray.cluster_resources() if k.startswith("accelerator_type:")]
    machine = _preflight.machine_key(key, device, accelerators)
    calibration = _preflight.load_cached(experiment / _preflight.PREFLIGHT_JSON, key)
    in_experiment = calibration is not None
    if calibration is None:
        calibration = _preflight.load_cached(_preflight.machine_cache(), machine)
        if calibration is not None:
            log.info("Memory pre-flight: this machine's calibration for this data shape, from %s (delete it to "
                     "probe again)", _preflight.machine_cache())
    if calibration is None:
        started = time.perf_counter()
        if device == "cuda":  # on a node with a GPU, in a share of its own, as a trial would be
            share = _preflight.SHARES[0] if gpus in ("auto", "fit") else min(float(gpus), 1.0)
            task = ray.remote(num_cpus=search.cpus_per_trial, num_gpus=share)(_preflight.calibrate)
            calibration = ray.get(task.remote(configs, shape, device, data))
        else:
            calibration = _preflight.calibrate(configs, shape, device)
        log.info("Memory pre-flight calibrated in %.1f s", time.perf_counter() - started)
        try:
            _preflight.save(_preflight.machine_cache(), machine, calibration)
        except OSError as exc:  # a read-only home: the experiment's copy below still serves a resume
            log.warning("Memory pre-flight: could not keep the calibration in %s (%s)", _preflight.machine_cache(), exc)
    if not in_experiment:
        _preflight.save(experiment / _preflight.PREFLIGHT_JSON, key, calibration)
    budget = search.preflight_memory_mb
    if budget is None and device == "cpu":  # the host's memory over the trials that run at once
        budget = calibration.total_mb / max(1, concurrent)
    return _preflight.Preflight(base=base, shape=shape, calibration=calibration, margin=search.preflight_margin,
                                share=gpus if gpus == "auto" else 1.0 if gpus == "fit" else float(gpus),
                                budget_mb=budget)  # fit: _fitting_share sets it


def _write_results(experiment: Path, base: dict, interrupted: bool) -> int:
    table = load_trials(experiment)
    table.drop(columns=["trial_dir", "history"]).to_csv(experiment / ex.TRIALS_CSV, index=False)
    print(format_table(table))
    print(f"\nTrial table: {experiment / ex.TRIALS_CSV}")
    best = ex.best_trial(table)
    if best is not None:
        config = ex.trial_config(base, ex.params(Path(best["trial_dir"])))
        defaults = TrainConfig()
        config.train.num_epochs = defaults.num_epochs
        config.train.output_dir = str(experiment / ex.BEST_DIR)
        which = f" (the baseline {best['baseline']})" if best.get("baseline") else ""
        header = (f"# Best trial {best['trial_id']}{which} of {experiment.name}: val_loss {best['val_loss']:.4f} after "
                  f"{best['epochs']} epochs.\n"
                  f"# Train it fully: python train_convlstm.py --config {experiment / ex.BEST_CONFIG}\n")
        (experiment / ex.BEST_CONFIG).write_text(header + yaml.safe_dump(config.to_dict(), sort_keys=False))
        print(f"Best config: {experiment / ex.BEST_CONFIG}")
        print(f"Optuna study: optuna-dashboard sqlite:///{experiment / ex.OPTUNA_DB}")
    if interrupted:
        print(f"Interrupted: resume with --name {experiment.name} --storage-path {experiment.parent} --resume")
    sys.stdout.flush()  # before Ray's own shutdown at exit: the table and this line are what the user reads
    return 130 if interrupted else 0

