"""The search space over any config field: its syntax, type checks, conditions, and the params -> config path."""

from __future__ import annotations

import dataclasses

import optuna
import pytest
import yaml

from data_io import ConfigError
from model.config import SECTIONS, Config
from tests.conftest import ROOT
from tune.experiment import trial_config
from tune.space import FIELDS, NOT_SEARCHABLE, define_by_run, extremes, load_space, params_to_overrides

ISSUE_EXAMPLE = ROOT / "examples" / "space.yaml"
BASE = Config().to_dict()


def _space(tmp_path, text: str, fixed=frozenset()) -> dict:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return load_space(str(path), BASE, fixed)


def _sampled(space: dict, n: int = 20, seed: int = 0) -> list[dict]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    trials = []
    for _ in range(n):
        trial = study.ask()
        define_by_run(trial, space, BASE)
        trials.append(trial.params)
        study.tell(trial, 0.0)
    return trials


def test_every_config_field_but_the_trial_owned_ones_is_searchable():
    every = {f.name for cls in SECTIONS.values() for f in dataclasses.fields(cls)}
    assert set(FIELDS) == every - NOT_SEARCHABLE


def test_issue_example_searches_data_model_and_train_fields_into_the_trial_config():
    space = load_space(str(ISSUE_EXAMPLE), BASE)
    sections = {FIELDS[k][0] for k in space}
    assert sections == {"data", "model", "train"}
    for params in _sampled(space, 10):
        config = trial_config(BASE, params)
        assert config.data.window_size in (4, 6, 8) and config.model.kernel_size in (3, 5)
        assert 1e-6 <= config.train.weight_decay <= 1e-3 and config.train.batch_size in (4, 8, 16)
        assert 1 <= len(config.model.hidden_channels) <= 3


def test_flag_names_work_like_field_names(tmp_path):
    assert _space(tmp_path, "batch-size: [4, 8]\nweight-decay: {low: 1.0e-6, high: 1.0e-3}\n")["batch_size"] == \
        {"values": [4, 8]}


def test_int_range_on_an_int_field_suggests_ints(tmp_path):
    space = _space(tmp_path, "window_size: {low: 2, high: 8}\n")
    assert all(isinstance(p["window_size"], int) and 2 <= p["window_size"] <= 8 for p in _sampled(space))


def test_condition_only_applies_when_the_other_key_has_the_value(tmp_path):
    space = _space(tmp_path, "include_upstream: [true, false]\n"
                             "upstream_lon_min: {values: [60.0, 65.0], when: {include_upstream: true}}\n")
    trials = _sampled(space, 30)
    assert {p["include_upstream"] for p in trials} == {True, False}
    assert all(("upstream_lon_min" in p) == p["include_upstream"] for p in trials)


def test_condition_on_a_fixed_field_uses_its_fixed_value(tmp_path):
    space = _space(tmp_path, "upstream_lon_min: {values: [60.0], when: {include_upstream: true}}\n")
    assert all("upstream_lon_min" not in p for p in _sampled(space, 3))  # include_upstream is false by default


def test_list_field_choices_are_lists_and_reach_the_config(tmp_path):
    space = _space(tmp_path, "log_variables: [[tp], [tp, pr]]\n")
    picked = {tuple(trial_config(BASE, p).data.log_variables) for p in _sampled(space)}
    assert picked == {("tp",), ("tp", "pr")}


def test_a_flat_list_for_a_list_field_is_one_fixed_value(tmp_path):
    assert _space(tmp_path, "hidden_channels: [16, 32]\n")["hidden_channels"] == {"values": [[16, 32]]}


def test_params_round_trip_through_params_json_types():
    params = {"num_layers": 2, "width_0": 16, "width_1": 32, "window_size": 4, "log_variables": '["tp"]'}
    assert params_to_overrides(params) == {"hidden_channels": [16, 32], "window_size": 4, "log_variables": ["tp"]}


def test_stored_form_reloads_to_itself(tmp_path):
    space = load_space(str(ISSUE_EXAMPLE), BASE)
    assert _space(tmp_path, yaml.safe_dump(space)) == space


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        ("batch_size: [4, 8.5]\n", "batch_size: 8.5 is not allowed; batch_size takes an int"),
        ("kernel_size: [3, 4]\n", "kernel_size: 4 is not allowed (--kernel-size must be odd"),
        ("include_upstream: {low: 0, high: 1}\n", "ranges are for int and float fields, and include_upstream is a"),
        ("device: [cpu, gpu]\n", "device: 'gpu' is not allowed; device takes one of 'auto', 'cuda', 'mps', 'cpu'"),
        ("num_epochs: [3]\n", "unknown key(s) ['num_epochs']; the searchable config fields are"),
        ("window_size: [0, 4]\n", "window_size: 0 is not allowed (--window-size must be at least 1"),
        ("kernel_size: {values: [3], when: {nope: 1}}\n", "kernel_size.when names 'nope'"),
        ("kernel_size: {values: [3], when: {include_upstream: 3}}\n", "kernel_size.when.include_upstream: 3 is not"),
        ("log_variables: [[tp], [1]]\n", "log_variables: [1] is not allowed; log_variables takes a list of str"),
    ],
    ids=["float-for-int", "even-kernel", "bool-range", "literal", "not-searchable", "window-0", "when-unknown",
         "when-type", "list-field"],
)
def test_bad_value_names_the_key_and_what_is_allowed(tmp_path, text, phrase):
    with pytest.raises(ConfigError, match="^--space ") as info:
        _space(tmp_path, text)
    assert phrase in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_key_given_as_a_flag_is_left_out(tmp_path):
    assert "batch_size" not in _space(tmp_path, "batch_size: [4]\n", fixed=frozenset({"batch_size"}))


def test_extremes_are_the_ends_of_each_numeric_key_every_other_choice_and_the_deepest_widest_stack(tmp_path):
    default = extremes(load_space(None, BASE))
    assert len(default) == 2 * 2 * 2  # batch_size, accumulation and learning_rate ends
    assert all(params_to_overrides(p)["hidden_channels"] == [128, 128, 128] for p in default)
    assert {(p["batch_size"], p["gradient_accumulation_steps"]) for p in default} == {(2, 1), (2, 8), (32, 1), (32, 8)}
    space = _space(tmp_path, "model_type: [stacked, dual_stream, shallow]\nbatch_size: [4]\nuse_amp: [true, false]\n"
                             "learning_rate: null\ngradient_accumulation_steps: null\n")
    corners = extremes(space)
    assert len(corners) == 6 and {p["model_type"] for p in corners} == {"stacked", "dual_stream", "shallow"}
    assert all(trial_config({"data": {}, "model": {}, "train": {}}, p) for p in corners)  # each is a config
    assert extremes(space, most=5) is None
