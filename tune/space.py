"""The search space: defaults, a YAML file that narrows them, and the define-by-run function OptunaSearch calls."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from data_io import ConfigError

DEFAULT_SPACE: dict[str, Any] = {
    "hidden_channels": {"layers": [1, 3], "widths": [8, 16, 32, 64, 128]},
    "batch_size": [2, 4, 8, 16, 32],
    "gradient_accumulation_steps": [1, 2, 4, 8],
    "learning_rate": {"low": 1e-4, "high": 3e-3, "log": True},
}
SEARCHED = tuple(DEFAULT_SPACE)


@dataclass
class Space:
    """What each trial may vary; a key that is absent is fixed to the trainer's value."""

    spec: dict[str, Any] = field(default_factory=lambda: copy.deepcopy(DEFAULT_SPACE))

    def without(self, fixed: set[str]) -> Space:
        return Space({k: v for k, v in self.spec.items() if k not in fixed})


def load_space(path: str | None) -> Space:
    """DEFAULT_SPACE, with the keys of the YAML file replacing their defaults (null removes a key)."""
    spec = copy.deepcopy(DEFAULT_SPACE)
    if path is None:
        return Space(spec)
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--space {path}: no such file")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"--space {path}: does not parse ({str(exc).splitlines()[0]}); fix the YAML") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"--space {path}: expected a mapping with keys {list(SEARCHED)}")
    unknown = sorted(set(raw) - set(SEARCHED))
    if unknown:
        raise ConfigError(f"--space {path}: unknown key(s) {unknown}; the space has {list(SEARCHED)}")
    for key, value in raw.items():
        if value is None:
            spec.pop(key)
        else:
            spec[key] = _checked(key, value, path)
    return Space(spec)


def _checked(key: str, value: Any, path: str) -> Any:
    where = f"--space {path}: {key}"
    if key == "hidden_channels":
        if not isinstance(value, dict) or set(value) - {"layers", "widths"}:
            raise ConfigError(f"{where} must be a mapping with 'layers: [min, max]' and 'widths: [..]'")
        layers = value.get("layers", DEFAULT_SPACE[key]["layers"])
        widths = value.get("widths", DEFAULT_SPACE[key]["widths"])
        if isinstance(layers, int):
            layers = [layers, layers]
        if len(layers) != 2 or not 1 <= layers[0] <= layers[1]:
            raise ConfigError(f"{where}.layers must be [min, max] with 1 <= min <= max, but got {layers}")
        _choices(f"{where}.widths", widths)
        return {"layers": [int(layers[0]), int(layers[1])], "widths": [int(w) for w in widths]}
    if key == "learning_rate":
        if isinstance(value, (int, float)):
            return {"low": float(value), "high": float(value), "log": False}
        if not isinstance(value, dict) or not {"low", "high"} <= set(value) or set(value) - {"low", "high", "log"}:
            raise ConfigError(f"{where} must be a number or {{low: .., high: .., log: true}}")
        low, high = float(value["low"]), float(value["high"])
        if not 0 < low <= high:
            raise ConfigError(f"{where} needs 0 < low <= high, but got low={low} high={high}")
        return {"low": low, "high": high, "log": bool(value.get("log", True))}
    return [int(v) for v in _choices(where, value)]


def _choices(where: str, value: Any) -> list:
    if isinstance(value, (int, float)):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where} must be a non-empty list of choices, but got {value!r}")
    if any(not isinstance(v, (int, float)) or v < 1 for v in value):
        raise ConfigError(f"{where} choices must be positive integers, but got {value}")
    return value


def define_by_run(trial, spec: dict[str, Any]) -> None:
    """Called by OptunaSearch for every new trial (module level: lambdas break experiment checkpoints)."""
    if "hidden_channels" in spec:
        lo, hi = spec["hidden_channels"]["layers"]
        n = trial.suggest_int("num_layers", lo, hi)
        for i in range(n):
            trial.suggest_categorical(f"width_{i}", spec["hidden_channels"]["widths"])
    for key in ("batch_size", "gradient_accumulation_steps"):
        if key in spec:
            trial.suggest_categorical(key, spec[key])
    if "learning_rate" in spec:
        lr = spec["learning_rate"]
        trial.suggest_float("learning_rate", lr["low"], lr["high"], log=lr["log"] and lr["low"] < lr["high"])


def params_to_overrides(params: dict[str, Any]) -> dict[str, Any]:
    """Suggested params -> flat trainer config keys."""
    out = {k: v for k, v in params.items() if k in ("batch_size", "gradient_accumulation_steps", "learning_rate")}
    if "num_layers" in params:
        out["hidden_channels"] = [int(params[f"width_{i}"]) for i in range(int(params["num_layers"]))]
    return out
