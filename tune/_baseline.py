"""Baselines: the user's own configs, run as the first trials of a search.

A baseline is a model preset name (`dual_stream`, ..., `stacked`) or a config file (e.g. a best_config.yaml).
It becomes one full config, resolved once when the search starts: the search's own config with the preset (or
the file's model and train sections) on top, while the data and the fields the search runs itself (epochs,
output folder, device, workers) stay the search's, so the baseline trains on the same data for as long as any trial.

The search space rarely holds a baseline: `model_type` is not searched, a width may lie outside the widths
searched. So a baseline trial does not go through the space: its full config travels in the trial's params
under BASELINE_KEY (params.json), and tune.experiment.trial_config builds exactly that config. Optuna still
records the baseline's params where they lie inside the space (enqueued, so TPE learns from the baseline); a
field outside the space is left out of its Optuna params rather than recorded as a value it did not run.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from data_io import ConfigError
from model._presets import PRESETS

BASELINE_KEY = "baseline"  # params.json: {"baseline": {"name": ..., "config": {data:.., model:.., train:..}}}
USER_ATTR = "baseline"  # the Optuna trial's user attr naming it
DEFAULT_BASELINE = "dual_stream"  # graphcast's default model type
NONE = "none"
PRESET_NAMES = ("stacked", *PRESETS)
# Train fields the search decides for every trial, baselines included.
RUN_FIELDS = ("output_dir", "num_epochs", "resume", "num_gpus", "ddp_cpu_workers", "device", "num_workers",
              "max_failures")


def allowed() -> str:
    return f"a preset ({', '.join(PRESET_NAMES)}), a config file (.yaml/.yml/.json) or {NONE}"


def requested(values: list[str] | None, demo: bool) -> list[str]:
    """The baselines to run. Default: graphcast's default preset on the user's data; none on the demo data,
    where a CPU dual_stream [64, 128] would take longer than the whole demo search and is not the user's model."""
    if values is None:
        return [] if demo else [DEFAULT_BASELINE]
    if NONE in values:
        if len(values) > 1:
            raise ConfigError(f"--baseline {' '.join(values)}: '{NONE}' turns baselines off; give it alone")
        return []
    for value in values:
        if value not in PRESET_NAMES and not _is_config_file(value):
            raise ConfigError(f"--baseline {value}: not {allowed()}")
    if len(set(values)) != len(values):
        raise ConfigError(f"--baseline {' '.join(values)}: a baseline is given twice; give each once")
    return list(values)


def _is_config_file(value: str) -> bool:
    return Path(value).is_file() and Path(value).suffix in (".yaml", ".yml", ".json")


def resolve(values: list[str], base: dict) -> dict[str, dict]:
    """Name -> the baseline's full nested config (see the module docstring), checked like any config."""
    from model._cli import build, load_config_file
    from model.config import SECTIONS, Config, _merge

    out = {}
    for value in values:
        nested = {k: copy.deepcopy(dict(base.get(k, {}))) for k in SECTIONS}
        where = f"--baseline {value}"
        source = {"model_type": value} if value in PRESET_NAMES else load_config_file(value)
        try:
            _merge(nested, source, where)
        except ConfigError as exc:
            raise ConfigError(str(exc).replace("--config ", "--baseline ")) from None
        nested["data"] = copy.deepcopy(dict(base["data"]))
        for name in RUN_FIELDS:
            nested["train"][name] = base["train"][name]
        config = build(Config, nested, where)
        try:
            config.validate()
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        out[value] = config.to_dict()
    return out


def flat(config: dict) -> dict[str, Any]:
    return {k: v for section in config.values() if isinstance(section, dict) for k, v in section.items()}


def in_space_params(spec: dict[str, Any], config: dict) -> dict[str, Any]:
    """The Optuna params of the baseline's values that lie inside the space (others are left out)."""
    from tune._params import LAYERS_PARAM, WIDTH_PARAM

    values = flat(config)
    out: dict[str, Any] = {}
    for key, dom in spec.items():
        if any(values.get(k) not in wanted for k, wanted in dom.get("when", {}).items()):
            continue
        value = values.get(key)
        if "layers" in dom:
            lo, hi = dom["layers"]
            if isinstance(value, list) and lo <= len(value) <= hi and all(w in dom["widths"] for w in value):
                out[LAYERS_PARAM] = len(value)
                out.update({WIDTH_PARAM.format(i): w for i, w in enumerate(value)})
        elif "values" in dom:
            if value in dom["values"]:
                out[key] = json.dumps(value) if isinstance(value, list) else value
        elif isinstance(value, (int, float)) and dom["low"] <= value <= dom["high"]:
            out[key] = value
    return out


def enqueue(study, spec: dict[str, Any], baselines: dict[str, dict]) -> None:
    """Put the baselines first in a new study's queue; a study that has trials (a restarted search) keeps its own."""
    if study.trials:
        return
    for name, config in baselines.items():
        study.enqueue_trial(in_space_params(spec, config), user_attrs={USER_ATTR: name, "config": config})


def name_of(params: dict) -> str | None:
    mark = params.get(BASELINE_KEY)
    return mark.get("name") if isinstance(mark, dict) else None
