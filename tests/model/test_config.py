"""One config tree: flags generated from it, --config files (YAML/JSON) under the flags, unknown keys refused."""

import dataclasses
import json

import pytest
import yaml

from data_io import ConfigError, DataConfig
from model.config import Config, ModelConfig, TrainConfig, config_from_args
from model.train import parser


def from_argv(*argv) -> Config:
    return config_from_args(parser().parse_args([str(a) for a in argv]))


def test_every_config_field_is_a_flag():
    options = {opt for action in parser()._actions for opt in action.option_strings}
    for cls in (DataConfig, ModelConfig, TrainConfig):
        for f in dataclasses.fields(cls):
            assert "--" + f.name.replace("_", "-") in options, f.name
    assert {"--no-amp", "--no-use-amp", "--config"} <= options


def test_defaults_and_flag_values_reach_the_config():
    config = from_argv("--hidden-channels", "8", "16", "32", "--no-amp", "--target", "tp", "--batch-size", "2")
    assert config.model.hidden_channels == [8, 16, 32]
    assert config.train.use_amp is False and config.train.batch_size == 2
    assert config.data.target == ["tp"]
    assert config.train.learning_rate == 1e-4 and config.data.window_size == 6


def test_yaml_config_saved_from_a_run_loads_and_flags_override_it(tmp_path):
    saved = Config()
    saved.model.hidden_channels = [8, 8]
    saved.train.batch_size = 16
    saved.data.variables = ["TEM", "U"]
    path = tmp_path / "best_config.yaml"
    path.write_text(yaml.safe_dump(saved.to_dict()))

    assert from_argv("--config", path) == saved
    config = from_argv("--config", path, "--batch-size", "2")
    assert config.train.batch_size == 2
    assert config.model.hidden_channels == [8, 8] and config.data.variables == ["TEM", "U"]


def test_flat_json_config_loads(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"learning_rate": 0.003, "hidden_channels": [4], "include_upstream": True}))
    config = from_argv("--config", path)
    assert config.train.learning_rate == 0.003
    assert config.model.hidden_channels == [4] and config.data.include_upstream is True


@pytest.mark.parametrize(
    ("name", "text", "needle"),
    [
        ("unknown.yaml", "batch_size: 4\nbatchsize: 8\n", "unknown key 'batchsize'"),
        ("unknown_in_section.yaml", "model:\n  hidden: [4]\n", "unknown key(s) ['hidden'] in section 'model'"),
        ("unknown.json", '{"train": {"epochs": 3}}', "unknown key(s) ['epochs'] in section 'train'"),
        ("broken.yaml", "model: [1, 2\n", "does not parse"),
        ("broken.json", '{"batch_size": 4,', "does not parse"),
        ("list.yaml", "- 1\n- 2\n", "expected a mapping"),
    ],
)
def test_bad_config_file_is_one_line_and_exit_2(run_main, demo_file, tmp_path, name, text, needle):
    path = tmp_path / name
    path.write_text(text)
    code, _, err = run_main(["--config", path, "--data", demo_file, "--output-dir", tmp_path / "run"])
    assert code == 2 and "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert f"--config {path}: " in line and needle in line


def test_config_value_of_the_wrong_type_is_one_line_and_exit_2(run_main, demo_file, tmp_path):
    path = tmp_path / "wrong_type.yaml"
    path.write_text("batch_size: four\n")
    code, _, err = run_main(["--config", path, "--data", demo_file, "--output-dir", tmp_path / "run"])
    assert code == 2
    (line,) = err.strip().splitlines()
    assert "batch_size = 'four' is not a valid int" in line


def test_missing_config_file_is_an_error():
    with pytest.raises(ConfigError, match="--config nowhere.yaml: no such file"):
        from_argv("--config", "nowhere.yaml")


@pytest.mark.parametrize(
    ("argv", "flag"),
    [(["--hidden-channels", "0"], "--hidden-channels"), (["--kernel-size", "4"], "--kernel-size"),
     (["--learning-rate", "0"], "--learning-rate"), (["--num-workers", "-1"], "--num-workers")],
)
def test_out_of_range_values_name_the_flag(argv, flag):
    with pytest.raises(ConfigError, match=flag):
        from_argv(*argv)
