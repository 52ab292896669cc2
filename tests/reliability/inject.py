"""Fault injection against a real `python -m tune.search`: SIGKILL the driver at a chosen moment, then --resume.

    python -m tests.reliability.inject --moment mid-trial          # one moment
    python -m tests.reliability.inject --moment all --keep DIR     # all five, keeping the experiments in DIR

Each moment runs a search in its own process with its own local Ray (a fresh RAY_TMPDIR), SIGKILLs the driver
when the experiment folder shows that moment, checks that the Ray processes it started died with it (any left
are killed and counted), then resumes with `--resume` in a new process and a new Ray, and checks:
- the resumed search exits 0 with exactly NUM_SAMPLES trials in trials.csv, every one finished ("ok");
- trials that had finished before the kill keep their val loss;
- the Optuna study has no RUNNING trial and one COMPLETE trial per Ray trial;
- every trial's last checkpoint loads.
The Ray workers carry tests/tune/_faults.py (through RAY_JOB_CONFIG_JSON_ENV_VAR, as `ray job submit` passes a
runtime env): epochs are slowed so that each moment can be caught, and the "checkpointing" moment holds a
checkpoint write half done while the driver is killed. Prints one JSON line per moment; exit 0 when all pass.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NUM_SAMPLES, EPOCHS = 4, 3
SPACE = {"hidden_channels": {"layers": 1, "widths": [4, 8]}, "batch_size": [4, 8], "learning_rate": 1e-3}
FAULTS = {"epoch_sleep_s": 1.5}


def _results(experiment: Path) -> dict[str, list[dict]]:
    """Trial folder name -> its reported results (a line cut off mid-write ends the list)."""
    out = {}
    for trial_dir in experiment.glob("train_trial_*"):
        rows = []
        path = trial_dir / "result.json"
        for line in path.read_text().splitlines() if path.is_file() else []:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
        out[trial_dir.name] = rows
    return out


def _finished(experiment: Path) -> dict[str, dict]:
    return {name: rows[-1] for name, rows in _results(experiment).items() if rows and rows[-1].get("trial_finished")}


# When to kill: a predicate on the experiment folder (and the faults' marker file).
MOMENTS: dict[str, Callable[[Path, Path], bool]] = {
    # A trial's folder has train/ once its trainer started; params.json and result.json come with its first result.
    "before-first-result": lambda e, m: any(e.glob("train_trial_*/train")) and not any(_results(e).values()),
    "mid-trial": lambda e, m: any(len(r) >= 1 and not r[-1].get("trial_finished") for r in _results(e).values())
    and not _finished(e),
    "checkpointing": lambda e, m: m.is_file(),
    "between-trials": lambda e, m: 1 <= len(_finished(e)) < NUM_SAMPLES,
    "after-last-trial": lambda e, m: len(_finished(e)) == NUM_SAMPLES,
}


def _env(ray_tmp: str, faults_file: Path) -> dict:
    job_config = {"runtime_env": {"worker_process_setup_hook": "tests.tune._faults.install",
                                  "env_vars": {"CONVLSTM_TEST_FAULTS": str(faults_file), "PYTHONPATH": str(ROOT)}}}
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "CONVLSTM_TEST_FAULTS")}
    env.update(RAY_TMPDIR=ray_tmp, CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(ROOT),
               CONVLSTM_TEST_FAULTS=str(faults_file), RAY_JOB_CONFIG_JSON_ENV_VAR=json.dumps(job_config))
    return env


def _ray_processes(ray_tmp: str) -> list:
    import psutil

    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(ray_tmp in part for part in proc.info["cmdline"] or []):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


def _reap_ray(ray_tmp: str, wait_s: float = 15.0) -> int:
    """Wait for the Ray processes of a killed driver to exit; SIGKILL those still there. Returns how many."""
    deadline = time.monotonic() + wait_s
    while _ray_processes(ray_tmp) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = _ray_processes(ray_tmp)
    for proc in left:
        try:
            proc.send_signal(signal.SIGKILL)
        except Exception:  # already gone
            pass
    return len(left)


def _search(args: list, ray_tmp: str, faults_file: Path, log: Path) -> subprocess.Popen:
    with log.open("a") as out:
        return subprocess.Popen([sys.executable, "-m", "tune.search", "--baseline", "none", *map(str, args)], cwd=ROOT,
                                env=_env(ray_tmp, faults_file), stdout=out, stderr=subprocess.STDOUT)


def run_moment(moment: str, workdir: Path, timeout: float = 300) -> dict:
    """Kill the driver at `moment`, resume, and check; returns {"moment", "ok", "checks": {...}, ...}."""
    from data_io.demo import write_demo

    workdir.mkdir(parents=True, exist_ok=True)
    data = workdir / "demo.nc"
    if not data.is_file():
        write_demo(data, seed=0, days=60, resolution=5.0)
    space = workdir / "space.json"
    space.write_text(json.dumps(SPACE))  # JSON is YAML
    marker = workdir / f"{moment}.save_marker"
    faults_file = workdir / f"{moment}.faults.json"
    faults = dict(FAULTS)
    if moment == "checkpointing":
        faults.update(save_delay_s=20, save_marker=str(marker))
    faults_file.write_text(json.dumps(faults))
    runs, name = workdir / "runs", moment
    experiment = runs / name
    shutil.rmtree(experiment, ignore_errors=True)
    log = workdir / f"{moment}.log"
    log.write_text("")
    report: dict = {"moment": moment, "experiment": str(experiment), "log": str(log)}

    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must stay < 108 bytes
    proc = _search(["--data", data, "--space", space, "--num-samples", NUM_SAMPLES, "--max-epochs", EPOCHS,
                    "--grace-epochs", EPOCHS, "--cpus-per-trial", 1, "--storage-path", runs, "--name", name,
                    "--seed", 0], ray_tmp, faults_file, log)
    try:
        deadline = time.monotonic() + timeout
        while not MOMENTS[moment](experiment, marker):
            if proc.poll() is not None:
                raise RuntimeError(f"the search ended (exit {proc.returncode}) before {moment}; see {log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no {moment} within {timeout} s; see {log}")
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        report["killed_while_running"] = proc.returncode == -signal.SIGKILL
        report["leftover_ray_processes_killed"] = _reap_ray(ray_tmp)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _reap_ray(ray_tmp, wait_s=0)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    finished_before = {n: r["val_loss"] for n, r in _finished(experiment).items()}
    report["finished_before_kill"] = len(finished_before)
    report["truncated_temp_files"] = len(list(experiment.glob("*/train/.*.tmp")))

    faults_file.write_text(json.dumps(FAULTS))  # the resumed search runs without the held checkpoint write
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    started = time.monotonic()
    proc = _search(["--resume", "--storage-path", runs, "--name", name], ray_tmp, faults_file, log)
    try:
        code = proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _reap_ray(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    report["resume_exit_code"] = code
    report["resume_s"] = round(time.monotonic() - started, 1)
    report["checks"] = _check(experiment, finished_before) if code == 0 else {"resume exits 0": False}
    report["ok"] = all(report["checks"].values()) and report["killed_while_running"]
    return report


def _check(experiment: Path, finished_before: dict[str, float]) -> dict[str, bool]:
    import optuna
    import pandas as pd
    from ray.tune import ExperimentAnalysis

    from model.checkpoint import load

    table = pd.read_csv(experiment / "trials.csv", dtype={"trial_id": str})
    after = _finished(experiment)
    storage = f"sqlite:///{experiment / 'optuna.db'}"
    (summary,) = optuna.get_all_study_summaries(storage)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    states = [t.state for t in study.trials]
    statuses = [t.status for t in ExperimentAnalysis(str(experiment)).trials]
    checkpoints = sorted(experiment.glob("*/checkpoint_*/last.pt"))
    loadable = True
    for path in checkpoints:
        try:
            load(path)
        except Exception:
            loadable = False
    return {
        "resume exits 0": True,
        f"trials.csv has exactly {NUM_SAMPLES} trials": len(table) == NUM_SAMPLES and table["trial_id"].is_unique,
        "every trial finished ok": set(table["status"]) == {"ok"},
        "Ray has every trial TERMINATED": statuses == ["TERMINATED"] * NUM_SAMPLES,
        "finished trials keep their val loss": all(after.get(n, {}).get("val_loss") == v
                                                   for n, v in finished_before.items()),
        "no Optuna trial RUNNING": optuna.trial.TrialState.RUNNING not in states,
        f"{NUM_SAMPLES} COMPLETE Optuna trials": states.count(optuna.trial.TrialState.COMPLETE) == NUM_SAMPLES,
        "every last checkpoint loads": bool(checkpoints) and loadable,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.reliability.inject", description=__doc__.split("\n")[0])
    p.add_argument("--moment", choices=[*MOMENTS, "all"], default="all")
    p.add_argument("--keep", type=Path, help="folder for the experiments (default: a temp folder, removed)")
    ns = p.parse_args(argv)
    workdir = ns.keep or Path(tempfile.mkdtemp(prefix="inject"))
    ok = True
    try:
        for moment in MOMENTS if ns.moment == "all" else [ns.moment]:
            report = run_moment(moment, workdir)
            ok &= report["ok"]
            print(json.dumps(report), flush=True)
    finally:
        if ns.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
