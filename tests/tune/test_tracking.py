"""Tracking: --mlflow logs every trial's params and per-epoch metrics (read back with the MLflow client), and the
TensorBoard event files Ray writes per trial hold the epoch metrics (read with tensorboard's EventAccumulator)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.tune.conftest import read_results
from tune._table import load_trials
from tune.experiment import params


@pytest.fixture(scope="module")
def tracked(experiment):
    """The shared search of tests/tune/conftest.py, which runs with --mlflow STORAGE/mlruns."""
    return experiment, experiment.parent / "mlruns"


# mlflow is imported in the test, not at collection, where it cost every pytest process 2 s.
@pytest.mark.skipif(importlib.util.find_spec("mlflow") is None,
                    reason="mlflow is not installed (pip install -e '.[mlflow]')")
def test_mlflow_has_one_run_per_trial_with_its_params_and_every_epoch(tracked):
    import mlflow

    experiment, store = tracked
    client = mlflow.tracking.MlflowClient(tracking_uri=store.as_uri())
    mlflow_experiment = client.get_experiment_by_name(experiment.name)
    runs = client.search_runs([mlflow_experiment.experiment_id])
    trials = load_trials(experiment)
    assert len(runs) == len(trials) == 3
    for _, trial in trials.iterrows():
        (run,) = [r for r in runs if trial["trial_id"] in r.info.run_name]  # Ray names each run after its trial
        suggested = params(Path(trial["trial_dir"]))
        assert {"learning_rate", "width_0", "gradient_accumulation_steps"} <= suggested.keys()
        assert run.data.params == {k: str(v) for k, v in suggested.items()}
        assert run.data.params["width_0"] == str(trial["hidden_channels"]).split()[0]
        assert int(run.data.params["gradient_accumulation_steps"]) == trial["accumulation"]
        assert float(run.data.params["learning_rate"]) == pytest.approx(trial["learning_rate"])
        history = client.get_metric_history(run.info.run_id, "val_loss")
        reported = [r["val_loss"] for r in read_results(trial["trial_dir"])]
        assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx(reported)
        assert len(reported) == 2
        assert [m.step for m in client.get_metric_history(run.info.run_id, "time_per_epoch_s")] == [1, 2]


def test_tensorboard_event_files_hold_every_epoch_of_every_trial(tracked):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    experiment, _ = tracked
    for trial_dir in load_trials(experiment)["trial_dir"]:
        (events,) = Path(trial_dir).glob("events.out.tfevents.*")
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        scalars = accumulator.Scalars("ray/tune/val_loss")
        reported = [r["val_loss"] for r in read_results(trial_dir)]
        assert [s.value for s in scalars] == pytest.approx(reported, rel=1e-6)  # float32 in the event file
        assert [s.step for s in scalars] == [1, 2]
