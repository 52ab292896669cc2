"""Interrupt a search (SIGINT to the driver process) after a trial finished, then --resume it."""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

from optuna.trial import TrialState

from tests.conftest import ROOT
from tests.tune.conftest import SEARCH_CMD, load_study, search_env, search_in_process, trials_csv, write_space

NUM_SAMPLES = 4  # two at a time: when the first has finished, one is running and two are still to start


def _finished_trials(experiment: Path) -> int:
    # The study, not result.json: Ray writes a trial's result.json into the storage path only at its next
    # experiment snapshot (seen: 5-20 s late, after most trials had finished), where the searcher tells Optuna
    # in the same driver step that ends the trial.
    db = experiment / "optuna.db"
    if not db.exists():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as con:
            return con.execute("SELECT count(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0]
    except sqlite3.OperationalError:  # the schema is still being created
        return 0


def _result_json(experiment: Path, trial_id: str) -> str:
    (path,) = experiment.glob(f"train_trial_{trial_id}_*/result.json")
    return path.read_text()


def _wait_for_a_finished_trial(proc: subprocess.Popen, experiment: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while _finished_trials(experiment) == 0:
        assert proc.poll() is None, f"the search ended (exit {proc.returncode}) before any trial finished"
        assert time.monotonic() < deadline, f"no trial finished in {timeout} s"
        time.sleep(0.2)


def test_interrupted_search_resumes_to_num_samples_and_keeps_finished_trials(ray_session, demo_nc, tmp_path):
    # Trials of a few seconds each (wide, small batches), so that some are still running at the SIGINT.
    space = write_space(tmp_path / "space.yaml", {"hidden_channels": {"layers": 1, "widths": [48, 64]},
                                                  "batch_size": 2})
    runs, name = tmp_path / "runs", "resume"
    experiment = runs / name
    # No ASHA stop (grace = max epochs): every trial that is not interrupted runs to the end.
    argv = ["--data", demo_nc, "--space", space, "--num-samples", NUM_SAMPLES, "--max-epochs", 2,
            "--grace-epochs", 2, "--cpus-per-trial", 1, "--storage-path", runs, "--name", name, "--seed", 0,
            "--address", ray_session.address]
    log = tmp_path / "search.out"
    with log.open("w") as out:
        proc = subprocess.Popen([*SEARCH_CMD, *map(str, argv)], cwd=ROOT, env=search_env(), stdout=out,
                                stderr=subprocess.STDOUT)
        try:
            _wait_for_a_finished_trial(proc, experiment)
            proc.send_signal(signal.SIGINT)
            code = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert code == 130, log.read_text()[-3000:]
    assert "Interrupted: resume with" in log.read_text()
    before = trials_csv(experiment)
    done_before = before[before["status"] == "ok"].set_index("trial_id")
    assert 1 <= len(done_before) < NUM_SAMPLES, before
    results_before = {t: _result_json(experiment, t) for t in done_before.index}
    # The interrupted trials are left RUNNING in Optuna, for the resumed search to tell.
    assert load_study(experiment).get_trials(states=(TrialState.RUNNING,))

    code, out = search_in_process(["--resume", "--storage-path", runs, "--name", name])

    assert code == 0, out[-3000:]
    after = trials_csv(experiment)
    assert len(after) == NUM_SAMPLES and after["trial_id"].is_unique
    assert set(after["status"]) == {"ok"}, after
    kept = after.set_index("trial_id").loc[done_before.index]
    assert kept["val_loss"].tolist() == done_before["val_loss"].tolist()
    assert kept["val_rmse"].tolist() == done_before["val_rmse"].tolist()
    for t in done_before.index:
        # Not re-run from scratch. A trial whose last report reached the driver after its last experiment
        # snapshot is restored from its last registered checkpoint and repeats only the epochs after it.
        now = _result_json(experiment, t)
        if now != results_before[t]:
            last = json.loads(now.splitlines()[-1])
            assert last["iterations_since_restore"] < last["training_iteration"], last
    study = load_study(experiment)
    assert len(study.trials) == NUM_SAMPLES
    assert not study.get_trials(states=(TrialState.RUNNING,))
    assert {t.state for t in study.trials} == {TrialState.COMPLETE}
