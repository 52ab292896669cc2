"""Bad search flags and files: one line naming the flag or file and the fix, exit 2, and no experiment left
behind that a rerun with the same --name would resume with the bad settings."""

from __future__ import annotations

import pytest

from tests.tune.conftest import restored_logging, write_space
from tune.search import main


def _exit_code_and_line(argv: list, capsys) -> tuple[int, str]:
    with restored_logging(), pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return exit_info.value.code, lines[0]


@pytest.mark.parametrize(
    ("flags", "phrase"),
    [
        (["--num-samples", "0"], "--num-samples must be a positive integer, but got 0"),
        (["--max-epochs", "2", "--grace-epochs", "3"], "--grace-epochs 3 is more than --max-epochs 2"),
        (["--cpus-per-trial", "0"], "--cpus-per-trial must be positive, but got 0.0"),
        (["--gpus-per-trial", "-1"], "--gpus-per-trial must be a number of 0 or more, auto or fit, but got -1"),
        (["--gpus-per-trial", "some"], "--gpus-per-trial must be a number of 0 or more, auto or fit, but got some"),
        (["--preflight-margin", "0"], "--preflight-margin must be positive (1.1 = 10% headroom), but got 0.0"),
        (["--preflight-memory-mb", "-5"], "--preflight-memory-mb must be positive, but got -5.0"),
    ],
    ids=["num-samples", "grace-epochs", "cpus-per-trial", "negative-gpus", "gpus-word", "margin", "budget"],
)
def test_out_of_range_search_flag_is_one_line_and_exit_2(flags, phrase, demo_nc, tmp_path, capsys):
    code, line = _exit_code_and_line(["--data", demo_nc, "--storage-path", tmp_path, "--name", "x", *flags], capsys)
    assert code == 2 and phrase in line, line
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        ("batch_size: [4, 8\n", "does not parse"),
        ("- 4\n- 8\n", "expected a mapping"),
        ("learning_rate: {low: 0.01, high: 0.001}\n", "learning_rate needs 0 < low <= high"),
        ("hidden_channels: {layers: [3, 1]}\n", "hidden_channels.layers must be [min, max] with 1 <= min <= max"),
        ("hidden_channels: {widths: [8], depth: 2}\n", "hidden_channels must be a mapping with 'layers"),
        ("gradient_accumulation_steps: [0, 2]\n",
         "gradient_accumulation_steps: 0 is not allowed (--gradient-accumulation-steps must be a positive integer, "
         "but got 0)"),
    ],
    ids=["not-yaml", "not-a-mapping", "lr-range", "layers", "unknown-hidden-key", "zero-choice"],
)
def test_bad_space_file_is_one_line_naming_the_file(text, phrase, demo_nc, tmp_path, capsys):
    space = tmp_path / "space.yaml"
    space.write_text(text)
    code, line = _exit_code_and_line(["--data", demo_nc, "--space", space, "--storage-path", tmp_path, "--name", "x"],
                                     capsys)
    assert code == 2 and f"--space {space}" in line and phrase in line, line


def test_config_file_that_does_not_parse_is_one_line(demo_nc, tmp_path, capsys):
    config = tmp_path / "best_config.yaml"
    config.write_text("train: {batch_size: 4\n")
    code, line = _exit_code_and_line(["--data", demo_nc, "--config", config, "--storage-path", tmp_path, "--name", "x"],
                                     capsys)
    assert code == 2 and f"--config {config}: does not parse" in line, line


def test_more_gpus_per_trial_than_the_cluster_has_is_one_line_and_leaves_no_experiment(ray_session, demo_nc, tmp_path,
                                                                                        capsys):
    argv = ["--data", demo_nc, "--storage-path", tmp_path, "--name", "gpus", "--gpus-per-trial", 2]
    code, line = _exit_code_and_line(argv, capsys)
    assert code == 2 and "--gpus-per-trial 2: the largest node of this Ray cluster has 0 GPU(s)" in line, line
    assert not (tmp_path / "gpus" / "search.yaml").exists(), "a rerun with the same --name would resume it"


def test_bad_data_file_in_a_search_leaves_no_experiment_to_resume(demo_nc, tmp_path, capsys):
    bad = tmp_path / "empty.nc"
    bad.write_bytes(b"")
    code, line = _exit_code_and_line(["--data", bad, "--storage-path", tmp_path, "--name", "x"], capsys)
    assert code == 2 and f"--data {bad}: the file is empty" in line, line
    assert not (tmp_path / "x" / "search.yaml").exists()
    space = write_space(tmp_path / "space.yaml", {"batch_size": 4})
    code, line = _exit_code_and_line(["--data", bad, "--space", space, "--resume", "--storage-path", tmp_path,
                                      "--name", "x"], capsys)
    assert code == 2 and "is not a search experiment" in line, line
