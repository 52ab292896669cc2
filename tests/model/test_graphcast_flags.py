"""Every training flag of graphcast's train_convlstm.py is accepted with graphcast's meaning.

GRAPHCAST_FLAGS is its argparse block (LeeTZhi/graphcast, train_convlstm.py, parse_args), flag by flag in its order:
every `add_argument('--name', ...)` there is listed once, with a value where it takes one. Graphcast's help counts
53 with -h and its README's aliases; its argparse holds 50 options, all here.
"""

import pytest

from model.config import Config, config_from_args
from model.train import parser

# (flag, value or None for a switch, section, field, expected value)
GRAPHCAST_FLAGS = [
    ("--data", "F.nc", "data", "data", "F.nc"),
    ("--output-dir", "runs/x", "train", "output_dir", "runs/x"),
    ("--include-upstream", None, "data", "include_upstream", True),
    ("--downstream-lat-min", "26", "data", "downstream_lat_min", 26.0),
    ("--downstream-lat-max", "39", "data", "downstream_lat_max", 39.0),
    ("--downstream-lon-min", "111", "data", "downstream_lon_min", 111.0),
    ("--downstream-lon-max", "124", "data", "downstream_lon_max", 124.0),
    ("--upstream-lat-min", "26", "data", "upstream_lat_min", 26.0),
    ("--upstream-lat-max", "49", "data", "upstream_lat_max", 49.0),
    ("--upstream-lon-min", "71", "data", "upstream_lon_min", 71.0),
    ("--upstream-lon-max", "109", "data", "upstream_lon_max", 109.0),
    ("--model-type", "deep", "model", "model_type", "deep"),
    ("--hidden-channels", ["32", "64", "128", "256"], "model", "hidden_channels", [32, 64, 128, 256]),
    ("--kernel-size", "5", "model", "kernel_size", 5),
    ("--dropout-rate", "0.1", "model", "dropout_rate", 0.1),
    ("--use-batch-norm", None, "model", "use_batch_norm", True),
    ("--no-batch-norm", None, "model", "use_batch_norm", False),
    ("--use-group-norm", None, "model", "use_group_norm", True),
    ("--no-group-norm", None, "model", "use_group_norm", False),
    ("--use-spatial-dropout", None, "model", "use_spatial_dropout", True),
    ("--no-spatial-dropout", None, "model", "use_spatial_dropout", False),
    ("--use-attention", None, "model", "use_attention", True),
    ("--no-attention", None, "model", "use_attention", False),
    ("--learning-rate", "3e-4", "train", "learning_rate", 3e-4),
    ("--batch-size", "2", "train", "batch_size", 2),
    ("--num-epochs", "7", "train", "num_epochs", 7),
    ("--gradient-clip-norm", "0.5", "train", "gradient_clip_norm", 0.5),
    ("--weight-decay", "1e-4", "train", "weight_decay", 1e-4),
    ("--window-size", "4", "data", "window_size", 4),
    ("--target-offset", "2", "data", "target_offset", 2),
    ("--train-ratio", "0.6", "data", "train_ratio", 0.6),
    ("--val-ratio", "0.2", "data", "val_ratio", 0.2),
    ("--trainval-end-date", "2020-01-01", "data", "test_start_date", "2020-01-01"),
    ("--test-start-date", "2020-02-01", "data", "test_start_date", "2020-02-01"),
    ("--high-precip-threshold", "12", "train", "high_precip_threshold", 12.0),
    ("--high-precip-weight", "3", "train", "high_precip_weight", 3.0),
    ("--multi-variable", None, "data", "multi_variable", True),
    ("--precip-loss-weight", "5", "train", "precip_loss_weight", 5.0),
    ("--max-rollout-steps", "6", "train", "max_rollout_steps", 6),
    ("--use-amp", None, "train", "use_amp", True),
    ("--no-amp", None, "train", "use_amp", False),
    ("--gradient-accumulation-steps", "3", "train", "gradient_accumulation_steps", 3),
    ("--num-workers", "0", "train", "num_workers", 0),
    ("--checkpoint-frequency", "1000", "train", "checkpoint_frequency", 1000),
    ("--validation-frequency", "500", "train", "validation_frequency", 500),
    ("--early-stopping-patience", "4", "train", "early_stopping_patience", 4),
    ("--resume", "runs/x/last.pt", "train", "resume", "runs/x/last.pt"),
    ("--reset-lr-on-resume", None, "train", "reset_lr_on_resume", True),
    ("--log-level", "DEBUG", "train", "log_level", "DEBUG"),
    ("--device", "cpu", "train", "device", "cpu"),
]


def _argv(rows) -> list[str]:
    argv = []
    for flag, value, *_ in rows:
        argv += [flag] + ([] if value is None else value if isinstance(value, list) else [value])
    return argv


def _config(argv) -> Config:
    return config_from_args(parser().parse_args(argv))


def test_the_list_is_graphcasts_whole_argparse():
    assert len(GRAPHCAST_FLAGS) == 50 and len({r[0] for r in GRAPHCAST_FLAGS}) == 50


@pytest.mark.parametrize("flag,value,section,name,expected", GRAPHCAST_FLAGS, ids=[r[0] for r in GRAPHCAST_FLAGS])
def test_each_graphcast_flag_sets_its_field(flag, value, section, name, expected):
    config = _config(_argv([(flag, value)]))
    assert getattr(getattr(config, section), name) == pytest.approx(expected) if isinstance(expected, float) \
        else getattr(getattr(config, section), name) == expected


def test_all_graphcast_flags_in_one_command_line():
    # Where a switch and its negation both appear, the later wins, as in graphcast's argparse.
    config = _config(_argv(GRAPHCAST_FLAGS))
    last = {}
    for _, _, section, name, expected in GRAPHCAST_FLAGS:
        last[(section, name)] = expected
    for (section, name), expected in last.items():
        assert getattr(getattr(config, section), name) == expected, name


def test_model_type_is_a_preset_that_explicit_flags_override():
    deep = _config(["--model-type", "deep"]).model
    assert (deep.topology, deep.hidden_channels, deep.use_group_norm, deep.use_attention, deep.dropout_rate) == \
        ("unet", [64, 128, 256, 512], True, True, 0.2)
    custom = _config(["--model-type", "deep", "--hidden-channels", "32", "64", "128", "256", "--no-attention"]).model
    assert (custom.hidden_channels, custom.use_attention, custom.use_group_norm) == ([32, 64, 128, 256], False, True)
    assert _config(["--model-type", "dual_stream"]).model.dropout_levels == "bottleneck"
    assert _config([]).model.topology == "stacked"


def test_a_later_source_s_preset_beats_an_earlier_source_s_keys(tmp_path):
    saved = tmp_path / "best_config.yaml"
    saved.write_text("model:\n  hidden_channels: [8, 16]\n  model_type: stacked\n")
    ns = parser().parse_args(["--config", str(saved), "--model-type", "shallow"])
    model = config_from_args(ns).model
    assert (model.model_type, model.hidden_channels, model.topology) == ("shallow", [32, 64], "unet")
    (tmp_path / "own.yaml").write_text("model_type: shallow\nhidden_channels: [8, 16]\n")
    model = config_from_args(parser().parse_args(["--config", str(tmp_path / "own.yaml")])).model
    assert (model.hidden_channels, model.topology) == ([8, 16], "unet")
