"""A real search over data, model and train fields: each trial trains on data prepared with its own data config,
the table follows the searched keys, and Ray prints no experiment-snapshot warnings."""

from __future__ import annotations

import logging

import pytest
import yaml

from tests.tune.conftest import load_study, search_in_process, trials_csv, write_space

SPACE = {
    "hidden_channels": {"layers": 1, "widths": [8]}, "batch_size": [8], "gradient_accumulation_steps": [1],
    "learning_rate": 1e-3, "window-size": [3, 4], "kernel_size": [3, 5], "include_upstream": [True, False],
    "weight_decay": {"low": 1.0e-6, "high": 1.0e-3, "log": True},
    "model_type": ["stacked", "dual_stream"],  # dual_stream's U-Net needs 2 levels: with 1 it is no valid config
}


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def data_search(ray_session, demo_nc, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dataspace")
    space = write_space(tmp / "space.yaml", SPACE)
    records = _Records()
    ray_logger = logging.getLogger("ray")
    ray_logger.addHandler(records)
    try:
        code, out = search_in_process([
            "--data", demo_nc, "--space", space, "--num-samples", 4, "--max-epochs", 3, "--grace-epochs", 3,
            "--cpus-per-trial", 1, "--storage-path", tmp / "runs", "--name", "d", "--seed", 3,
        ])
    finally:
        ray_logger.removeHandler(records)
    return tmp / "runs" / "d", code, out, records.messages


def test_table_and_best_config_follow_the_searched_keys(data_search):
    experiment, _, out, _ = data_search
    table = trials_csv(experiment)
    for key in ("window_size", "kernel_size", "include_upstream", "weight_decay"):
        assert key in table.columns, key
    header = next(line for line in out.splitlines() if line.split()[:2] == ["rank", "trial_id"])
    assert {"window_size", "kernel_size", "include_upstream", "weight_decay"} <= set(header.split())
    best = yaml.safe_load((experiment / "best_config.yaml").read_text())
    first = table.iloc[0]
    assert best["data"]["window_size"] == first["window_size"]
    assert best["train"]["weight_decay"] == pytest.approx(first["weight_decay"])


def test_search_prints_no_snapshot_warnings_and_keeps_no_finished_checkpoints(data_search):
    experiment, _, out, warnings = data_search
    assert not [m for m in warnings if "snapshotting has been triggered" in m], warnings
    assert "snapshotting has been triggered" not in out
    assert not list(experiment.glob("*/checkpoint_*")), "a finished trial's checkpoints are kept"


def test_a_suggested_config_that_is_not_valid_is_told_to_optuna_and_never_launched(data_search):
    experiment, code, _, _ = data_search
    table = trials_csv(experiment)
    assert code == 0 and len(table) == 4 and set(table["status"]) <= {"ok", "stopped early"}
    assert set(table["model_type"]) == {"stacked"}
    invalid = [t for t in load_study(experiment).trials if t.user_attrs.get("status") == "invalid"]
    assert invalid and all(t.params["model_type"] == "dual_stream" for t in invalid)
    assert all("needs at least 2 --hidden-channels" in t.user_attrs["reason"] for t in invalid)
    assert all(t.state.name == "PRUNED" and t.constraints == {"fits_and_converges": 1.0} for t in invalid)
