"""python -m tune.report on a real tiny search, on a copy with an OOM and a pending trial, and without optuna.db."""

from __future__ import annotations

import io
import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest

from tune._table import COLUMNS
from tune.report import main, pareto_front

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def report(argv: list, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


@pytest.fixture
def copied(experiment, tmp_path) -> Path:
    """The experiment copied elsewhere, plus a trial that ran out of memory and one that has not reported yet."""
    copy = shutil.copytree(experiment, tmp_path / "elsewhere" / "x")
    oom = copy / "train_trial_deadbeef_4_batch_size=32_2026-01-01_00-00-00"
    oom.mkdir()
    (oom / "params.json").write_text(json.dumps(
        {"batch_size": 32, "gradient_accumulation_steps": 2, "learning_rate": 1e-3, "num_layers": 2,
         "width_0": 128, "width_1": 128}))
    (oom / "result.json").write_text(json.dumps(
        {"trial_id": "deadbeef", "hidden_channels": "128 128", "batch_size": 32, "gradient_accumulation_steps": 2,
         "effective_batch_size": 64, "learning_rate": 1e-3, "epoch": 0, "status": "oom", "trial_finished": True,
         "device": "cuda", "val_loss": math.inf, "peak_memory_mb": 79000.0}) + "\n")
    pending = copy / "train_trial_cafef00d_5_batch_size=2_2026-01-01_00-00-01"
    pending.mkdir()
    (pending / "params.json").write_text(json.dumps(
        {"batch_size": 2, "gradient_accumulation_steps": 1, "learning_rate": 1e-3, "num_layers": 1, "width_0": 8}))
    (pending / "result.json").write_text('{"trial_id": "cafef00d", "epoch": 1, "val_lo')  # cut off mid-write
    return copy


def test_table_lists_every_trial_best_val_loss_first(experiment, capsys):
    code, out, _ = report([experiment], capsys)
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0].split()[:3] == ["rank", "trial_id", "status"]
    assert len(lines) == 1 + 3
    assert [line.split()[0] for line in lines[1:]] == ["1", "2", "3"]


def test_csv_parses_back_with_the_search_columns(experiment, tmp_path, capsys):
    code, _, _ = report([experiment, "--format", "csv", "--output", tmp_path / "t.csv"], capsys)
    df = pd.read_csv(tmp_path / "t.csv")
    assert code == 0
    assert list(df.columns) == COLUMNS
    assert len(df) == 3 and (df["status"] == "ok").all()
    assert df["val_loss"].is_monotonic_increasing
    assert df["effective_batch"].tolist() == (df["batch_size"] * df["accumulation"]).tolist()


def test_json_parses_back_with_val_loss_history_per_trial(experiment, capsys):
    code, out, _ = report([experiment, "--format", "json"], capsys)
    rows = json.loads(out)
    assert code == 0
    assert [list(r)[:-1] for r in rows] == [COLUMNS] * 3
    assert all(len(r["history"]) == r["epochs"] == 2 and r["history"][-1] == pytest.approx(r["val_loss"]) for r in rows)


def test_markdown_and_html_hold_one_row_per_trial(experiment, capsys):
    _, md, _ = report([experiment, "--format", "markdown"], capsys)
    _, html, _ = report([experiment, "--format", "html"], capsys)
    md_lines = md.strip().splitlines()
    assert len(md_lines) == 2 + 3
    assert all(line.startswith("| ") and line.count(" | ") == len(COLUMNS) - 1 for line in md_lines[:1] + md_lines[2:])
    assert html.count("<tr") == 1 + 3 and html.count("<td>") == 3 * len(COLUMNS)


def test_status_filter_top_and_sort(copied, capsys):
    _, out, _ = report([copied, "--status", "oom", "--format", "csv"], capsys)
    assert pd.read_csv(io.StringIO(out))["trial_id"].tolist() == ["deadbeef"]
    _, out, _ = report([copied, "--status", "ok", "pending", "--format", "csv"], capsys)
    assert sorted(pd.read_csv(io.StringIO(out))["status"].unique()) == ["ok", "pending"]
    _, out, _ = report([copied, "--sort", "time_per_epoch_s", "--descending", "--top", "2", "--format", "csv"], capsys)
    df = pd.read_csv(io.StringIO(out))
    assert len(df) == 2 and df["time_per_epoch_s"].is_monotonic_decreasing


def test_copied_folder_lists_oom_and_pending_trials_after_the_fitted_ones(copied, capsys):
    code, out, _ = report([copied, "--format", "csv"], capsys)
    df = pd.read_csv(io.StringIO(out))
    assert code == 0
    assert df["status"].tolist()[:3] == ["ok"] * 3 and set(df["status"][3:]) == {"oom", "pending"}
    assert df.loc[df["trial_id"] == "deadbeef", "effective_batch"].item() == 64


def test_plots_are_written_as_png_files(experiment, tmp_path, capsys):
    code, _, err = report([experiment, "--plots", tmp_path / "plots"], capsys)
    assert code == 0
    names = {"learning_curves.png", "pareto.png", "oom_map.png", "importances.png"}
    assert {p.name for p in (tmp_path / "plots").iterdir()} == names, err
    for name in names:
        data = (tmp_path / "plots" / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000


def test_without_optuna_db_the_table_and_ray_plots_still_come(copied, tmp_path, capsys):
    (copied / "optuna.db").unlink()
    code, out, err = report([copied, "--plots", tmp_path / "plots"], capsys)
    assert code == 0
    assert "deadbeef" in out
    assert {p.name for p in (tmp_path / "plots").iterdir()} == {"learning_curves.png", "pareto.png", "oom_map.png"}
    assert "optuna.db is missing" in err


@pytest.mark.parametrize(
    "argv, message",
    [(["--sort", "speed"], "--sort speed: unknown column"), (["--status", "fine"], "--status fine: unknown"),
     (["--top", "0"], "--top must be a positive integer")],
)
def test_bad_flags_are_one_line_and_exit_2(experiment, capsys, argv, message):
    code, _, err = report([experiment, *argv], capsys)
    assert code == 2
    assert err.count("\n") == 1 and message in err


def test_a_folder_that_is_not_an_experiment_is_refused(tmp_path, capsys):
    code, _, err = report([tmp_path], capsys)
    assert code == 2 and "not a search experiment" in err and err.count("\n") == 1


def test_pareto_front_keeps_the_rows_no_other_beats_on_time_and_loss():
    pts = pd.DataFrame({"time_per_epoch_s": [1.0, 2.0, 3.0, 1.5, 4.0, None],
                        "val_loss": [0.9, 0.5, 0.6, 0.95, 0.1, 0.01]})
    assert pareto_front(pts).index.tolist() == [0, 1, 4]
