"""The search space over any field of the config tree: defaults, the --space YAML, and the define-by-run function.

A key is a config field by its field or flag name (`batch_size` or `batch-size`, any section: data, model, train):
    batch_size: [4, 8, 16]                                 choices (a list; one plain value fixes the field)
    learning_rate: {low: 1.0e-4, high: 3.0e-3, log: true}  a range: int when the field is an int, else float
    hidden_channels: {layers: [1, 3], widths: [16, 32]}    depth and width of each layer, searched apart
    variables: [[t2m], [t2m, z@500]]                        a list field's choices are lists
    upstream_lon_min: {values: [60, 70], when: {include_upstream: true}}
                                                           only searched when include_upstream is true (in this
                                                           trial, or fixed); otherwise the field keeps its value
`when` maps keys to a value or a list of values; it works on choices and ranges (`{low: .., high: .., when: ..}`).
Values are checked against the field's type and the config's own checks before any trial runs.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from data_io import ConfigError
from tune._params import LAYERS_PARAM, WIDTH_PARAM
from model.config import SECTIONS, Config

DEFAULT_SPACE: dict[str, Any] = {
    "hidden_channels": {"layers": [1, 3], "widths": [8, 16, 32, 64, 128]},
    "batch_size": {"values": [2, 4, 8, 16, 32]},
    "gradient_accumulation_steps": {"values": [1, 2, 4, 8]},
    "learning_rate": {"low": 1e-4, "high": 3e-3, "log": True},
}
# Fields a trial does not choose: it writes into its own folder, resumes from Tune checkpoints, runs --max-epochs
# epochs, and gets its devices from --gpus-per-trial (data-parallel training is the retrain's).
NOT_SEARCHABLE = frozenset({"resume", "output_dir", "num_epochs", "num_gpus", "ddp_cpu_workers"})


def _field_types() -> dict[str, tuple[str, Any]]:
    """Searchable field -> (section, type without `| None`); None allowed is kept as a second flag below."""
    out = {}
    for section, cls in SECTIONS.items():
        for name, hint in typing.get_type_hints(cls).items():
            if name not in NOT_SEARCHABLE:
                out[name] = (section, hint)
    return out


FIELDS = _field_types()


def searchable() -> list[str]:
    return sorted(FIELDS)


def load_space(path: str | None, base: dict | None = None, fixed: frozenset[str] = frozenset()) -> dict[str, Any]:
    """DEFAULT_SPACE with the YAML file's keys replacing their defaults (null removes a key), less the `fixed`
    keys (given as flags), checked against the config tree with `base` (the search's nested config)."""
    spec = copy.deepcopy(DEFAULT_SPACE)
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"--space {path}: no such file")
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"--space {path}: does not parse ({str(exc).splitlines()[0]}); fix the YAML") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"--space {path}: expected a mapping of config fields to values, e.g. "
                              "'batch_size: [4, 8]'")
        for key, value in raw.items():
            name = str(key).replace("-", "_")
            if value is None:
                spec.pop(name, None)
            else:
                spec[name] = value
    spec = {k: v for k, v in spec.items() if k not in fixed}
    return checked(spec, f"--space {path}" if path else "search space", base or {})


def checked(spec: dict[str, Any], where: str, base: dict) -> dict[str, Any]:
    """The space in its one stored form ({values}, {low, high, log}, {layers, widths}, each maybe with `when`)."""
    unknown = sorted(set(spec) - set(FIELDS))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; the searchable config fields are {searchable()}")
    out = {key: _checked_key(key, value, f"{where}: {key}", base) for key, value in spec.items()}
    for key, value in out.items():
        for other, wanted in value.get("when", {}).items():
            if other == key or other not in FIELDS:
                raise ConfigError(f"{where}: {key}.when names {other!r}, which is not another config field; use one "
                                  f"of {searchable()}")
            for w in wanted:
                _check_value(other, w, f"{where}: {key}.when.{other}", base)
    return out


def _checked_key(key: str, value: Any, where: str, base: dict) -> dict[str, Any]:
    when = {}
    if isinstance(value, dict) and "when" in value:
        value = dict(value)
        cond = value.pop("when")
        if not isinstance(cond, dict) or not cond:
            raise ConfigError(f"{where}.when must map config fields to values, e.g. {{include_upstream: true}}")
        when = {str(k).replace("-", "_"): (v if isinstance(v, list) else [v]) for k, v in cond.items()}
    if key == "hidden_channels" and isinstance(value, dict) and "values" not in value:
        out = _hidden(value, where)
    elif isinstance(value, dict) and "values" not in value:
        out = _range(key, value, where, base)
    else:
        values = value["values"] if isinstance(value, dict) else value
        if isinstance(value, dict) and set(value) != {"values"}:
            raise ConfigError(f"{where}: a mapping with 'values' takes only 'values' and 'when', but got "
                              f"{sorted(value)}")
        if not isinstance(values, list) or _is_list_field(key) and values and not isinstance(values[0], list):
            values = [values]
        if not values:
            raise ConfigError(f"{where} must be a non-empty list of choices, but got {values!r}")
        out = {"values": [_check_value(key, v, where, base) for v in values]}
    return {**out, "when": when} if when else out


def _hidden(value: dict, where: str) -> dict[str, Any]:
    if set(value) - {"layers", "widths"}:
        raise ConfigError(f"{where} must be a mapping with 'layers: [min, max]' and 'widths: [..]' (or a list of "
                          f"width lists), but got keys {sorted(value)}")
    layers = value.get("layers", DEFAULT_SPACE["hidden_channels"]["layers"])
    widths = value.get("widths", DEFAULT_SPACE["hidden_channels"]["widths"])
    if isinstance(layers, int):
        layers = [layers, layers]
    if not isinstance(layers, list) or len(layers) != 2 or not all(isinstance(n, int) for n in layers) \
            or not 1 <= layers[0] <= layers[1]:
        raise ConfigError(f"{where}.layers must be [min, max] with 1 <= min <= max, but got {layers}")
    if isinstance(widths, int):
        widths = [widths]
    if not isinstance(widths, list) or not widths:
        raise ConfigError(f"{where}.widths must be a non-empty list of choices, but got {widths!r}")
    if any(not isinstance(w, int) or isinstance(w, bool) or w < 1 for w in widths):
        raise ConfigError(f"{where}.widths choices must be positive integers, but got {widths}")
    return {"layers": list(layers), "widths": list(widths)}


def _range(key: str, value: dict, where: str, base: dict) -> dict[str, Any]:
    kind, _ = _unwrap(FIELDS[key][1])
    if kind not in (int, float):
        raise ConfigError(f"{where}: {{low, high}} ranges are for int and float fields, and {key} is "
                          f"{_type_name(key)}; give a list of choices")
    if not {"low", "high"} <= set(value) or set(value) - {"low", "high", "log"}:
        raise ConfigError(f"{where} must be a list of choices or {{low: .., high: .., log: true}}, but got "
                          f"keys {sorted(value)}")
    low, high = (_check_value(key, value[k], where, base) for k in ("low", "high"))
    log = value.get("log", kind is float)
    if not isinstance(log, bool):
        raise ConfigError(f"{where}.log must be true or false, but got {log!r}")
    if not low <= high or log and low <= 0:
        raise ConfigError(f"{where} needs {'0 < ' if log else ''}low <= high, but got low={low} high={high}")
    return {"low": low, "high": high, "log": log}


def _is_list_field(key: str) -> bool:
    return typing.get_origin(_unwrap(FIELDS[key][1])[0]) is list


def _unwrap(hint: Any) -> tuple[Any, bool]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0], True
    return hint, False


def _type_name(key: str) -> str:
    kind, optional = _unwrap(FIELDS[key][1])
    if typing.get_origin(kind) is Literal:
        name = "one of " + ", ".join(map(repr, typing.get_args(kind)))
    elif typing.get_origin(kind) is list:
        name = f"a list of {typing.get_args(kind)[0].__name__}"
    else:
        name = ("an " if kind is int else "a ") + kind.__name__
    return name + (" or null" if optional else "")


def _check_value(key: str, value: Any, where: str, base: dict) -> Any:
    """The value if it has the field's type and passes the config's checks with the rest of `base`."""
    kind, optional = _unwrap(FIELDS[key][1])
    if not _has_type(value, kind, optional):
        raise ConfigError(f"{where}: {value!r} is not allowed; {key} takes {_type_name(key)}")
    if kind is float and value is not None:
        value = float(value)
    section = FIELDS[key][0]
    nested = {s: dict(base.get(s, {})) for s in SECTIONS}
    nested[section][key] = value
    from model._cli import build

    try:
        config = build(Config, nested, "config")
        config.validate()
        if section == "data":
            from data_io.config import validate

            validate(config.data)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {value!r} is not allowed ({exc})") from None
    return value


def _has_type(value: Any, kind: Any, optional: bool) -> bool:
    if value is None:
        return optional
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if typing.get_origin(kind) is Literal:
        return value in typing.get_args(kind)
    if typing.get_origin(kind) is list:
        (item,) = typing.get_args(kind)
        return isinstance(value, list) and bool(value) and all(_has_type(v, item, False) for v in value)
    return isinstance(value, kind)


def define_by_run(trial, spec: dict[str, Any], base: dict | None = None) -> dict | None:
    """Called by OptunaSearch for every new trial (module level: lambdas break experiment checkpoints).

    Unconditional keys first, then conditional ones in the space's order, each against this trial's values so far
    (or the fixed config's, for a key this trial does not vary). A baseline (tune/_baseline.py) is enqueued
    with its params inside the space: those are suggested (Optuna hands back the enqueued values) and its full
    config returned, which Ray puts in the trial's params."""
    from tune import _baseline

    name = (getattr(trial, "user_attrs", None) or {}).get(_baseline.USER_ATTR)
    if name is not None:
        config = trial.user_attrs["config"]
        fixed_params = _baseline.in_space_params(spec, config)
        for key, value in spec.items():
            if (LAYERS_PARAM if "layers" in value else key) in fixed_params:
                _suggest(trial, key, value)
        return {_baseline.BASELINE_KEY: {"name": name, "config": config}}
    chosen: dict[str, Any] = {}
    fixed = {k: v for section in (base or {}).values() if isinstance(section, dict) for k, v in section.items()}
    for key, value in sorted(spec.items(), key=lambda kv: bool(kv[1].get("when"))):
        if any(chosen.get(k, fixed.get(k)) not in wanted for k, wanted in value.get("when", {}).items()):
            continue
        chosen[key] = _suggest(trial, key, value)
    return None


def _suggest(trial, key: str, value: dict[str, Any]) -> Any:
    if "layers" in value:
        lo, hi = value["layers"]
        n = trial.suggest_int(LAYERS_PARAM, lo, hi)
        return [trial.suggest_categorical(WIDTH_PARAM.format(i), value["widths"]) for i in range(n)]
    if "values" in value:
        # Optuna's choices are None, bool, int, float or str: a list field's choices travel as JSON text.
        choices = [json.dumps(v) if isinstance(v, list) else v for v in value["values"]]
        picked = trial.suggest_categorical(key, choices)
        return json.loads(picked) if _is_list_field(key) and isinstance(picked, str) else picked
    lo, hi, log = value["low"], value["high"], value["log"] and value["low"] < value["high"]
    if isinstance(lo, int) and _unwrap(FIELDS[key][1])[0] is int:
        return trial.suggest_int(key, lo, hi, log=log)
    return trial.suggest_float(key, lo, hi, log=log)


def extremes(spec: dict[str, Any], most: int = 256) -> list[dict[str, Any]] | None:
    """Params at the space's extremes, among which its config of largest memory is (memory grows or shrinks with
    each numeric field, one way or the other): each range's and numeric choice list's two ends, every other choice,
    and hidden_channels at its most layers of its widest width. A `when` key is taken as always searched, which
    can only overstate. None when there are more than `most` combinations."""
    axes: list[list[dict[str, Any]]] = []  # each key's candidate params; the extremes are their product
    for key, value in spec.items():
        if "layers" in value:  # one point: the deepest stack of the widest layers
            n, width = value["layers"][1], max(value["widths"])
            axes.append([{LAYERS_PARAM: n, **{WIDTH_PARAM.format(i): width for i in range(n)}}])
            continue
        if "values" in value:
            values = value["values"]
            numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
            ends = [min(values), max(values)] if numeric else values
        else:
            ends = [value["low"], value["high"]]
        axes.append([{key: json.loads(v)} for v in dict.fromkeys(json.dumps(v) for v in ends)])
    if math.prod(len(axis) for axis in axes) > most:
        return None
    return [{k: v for part in combo for k, v in part.items()} for combo in itertools.product(*axes)]


def params_to_overrides(params: dict[str, Any]) -> dict[str, Any]:
    """A trial's suggested params (params.json) -> flat config keys."""
    out = {}
    for key, value in params.items():
        if key in FIELDS:
            out[key] = json.loads(value) if _is_list_field(key) and isinstance(value, str) else value
    if LAYERS_PARAM in params:
        out["hidden_channels"] = [int(params[WIDTH_PARAM.format(i)]) for i in range(int(params[LAYERS_PARAM]))]
    return out
