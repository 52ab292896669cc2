"""The experiment folder, STORAGE_PATH/NAME: its layout, a trial's params and results, its full config, the best.

    search.yaml        the search's fixed config, its space and its search options (written before any trial)
    search.log         the search's log
    optuna.db          the Optuna study (SQLite)
    trials.csv         the trial table, written when the search ends
    best_config.yaml   the best trial's full config, ready for train_convlstm.py --config or tune.retrain
    best/              tune.retrain's output
    <trial folder>/    one per trial (Ray's): params.json (the suggested params), result.json (one JSON line per
                       report), error.txt when it failed, checkpoint_NNNNNN/ while it runs
    tuner.pkl, experiment_state-*.json, searcher-state-*.pkl   Ray's own state: read only by --resume

Everything here reads JSON, YAML (safe_load) and text only; Ray's pickles are never opened outside --resume.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from data_io import ConfigError
from model.config import SECTIONS, Config, _merge, metric_direction
from tune.outcome import FITTED
from tune.space import params_to_overrides

SEARCH_YAML = "search.yaml"
SEARCH_LOG = "search.log"
OPTUNA_DB = "optuna.db"
TRIALS_CSV = "trials.csv"
BEST_CONFIG = "best_config.yaml"
BEST_DIR = "best"
STUDY_ID = ".study_id"
PARAMS_JSON = "params.json"
RESULT_JSON = "result.json"
ERROR_TXT = "error.txt"
ERROR_PKL = "error.pkl"  # its existence tells a trial failed; it is never loaded


@dataclass(frozen=True)
class Experiment:
    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def name(self) -> str:
        return self.path.name

    def file(self, name: str) -> Path:
        return self.path / name

    def is_search(self) -> bool:
        return self.file(SEARCH_YAML).is_file()

    def write_search(self, config: dict, space: dict, search: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self.file(SEARCH_YAML).write_text(yaml.safe_dump({"config": config, "space": space, "search": search}))

    def search(self) -> dict[str, Any]:
        """search.yaml: {config: the fixed nested config, space: the searched keys, search: the search options}."""
        path = self.file(SEARCH_YAML)
        if not path.is_file():
            raise ConfigError(f"{self.path}: not a search experiment (no {SEARCH_YAML}); "
                              "pass the folder python -m tune.search wrote (STORAGE_PATH/NAME)")
        try:
            saved = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: does not parse ({str(exc).splitlines()[0]}); the experiment is damaged") \
                from None
        if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
            raise ConfigError(f"{path}: expected the keys config, space and search; the experiment is damaged")
        saved.setdefault("space", {})
        return saved

    def base(self) -> dict:
        return self.search()["config"]

    def searched_keys(self) -> list[str]:
        """The config fields the search varies, in the space's order (empty when search.yaml is missing)."""
        return list(self.search()["space"]) if self.is_search() else []

    def trial_dirs(self) -> list[Path]:
        return sorted(p.parent for p in self.path.glob(f"*/{PARAMS_JSON}"))

    def trial_config(self, trial_dir: Path, base: dict | None = None) -> Config:
        return trial_config(self.base() if base is None else base, params(trial_dir))


def params(trial_dir: Path) -> dict[str, Any]:
    """The params Optuna suggested for this trial, as Ray wrote them."""
    path = Path(trial_dir) / PARAMS_JSON
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc}); the trial folder is damaged") from None


def results(trial_dir: Path) -> list[dict]:
    """Every report of the trial, in order (a last line cut off by a crash mid-write is left out)."""
    return read_jsonl(Path(trial_dir) / RESULT_JSON)


def read_jsonl(path: Path) -> list[dict]:
    """One JSON object per line, up to the first line that does not parse (one cut off by a crash mid-write)."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


def failed(trial_dir: Path) -> bool:
    return (Path(trial_dir) / ERROR_TXT).is_file() or (Path(trial_dir) / ERROR_PKL).is_file()


def trial_config(base: dict, trial_params: dict) -> Config:
    """The search's fixed config with this trial's suggested params on top (a baseline's: its own config)."""
    from model._cli import build
    from tune._baseline import BASELINE_KEY

    if isinstance(trial_params.get(BASELINE_KEY), dict):  # a baseline runs exactly its own config
        config = build(Config, trial_params[BASELINE_KEY]["config"], "baseline config")
        config.validate()
        return config
    nested = {k: dict(base.get(k, {})) for k in SECTIONS}
    _merge(nested, params_to_overrides(trial_params), "trial params")
    config = build(Config, nested, "trial config")
    config.validate()
    return config


def objective(base: dict | None) -> tuple[str, str, str]:
    """What the search optimises: (the key trials report, the trial table's column, "min" or "max"). The val loss,
    or with --metric NAME the validation split's NAME (EpochRecord.val_metric), in NAME's direction."""
    name = ((base or {}).get("train") or {}).get("val_metric")
    if not name:
        return "val_loss", "val_loss", "min"
    return "val_metric", f"val_{name}", metric_direction(name)


def best_trial(table: pd.DataFrame) -> pd.Series | None:
    """The table's best row: the best objective (the table's attrs["objective"] = (column, mode), set by
    tune._table.load_trials; else the lowest val loss) of the trials that trained (ran to the end or were stopped
    early); None when no trial has a value yet."""
    column, mode = table.attrs.get("objective", ("val_loss", "min"))
    finished = table[table["status"].isin([o.value for o in FITTED]) & table[column].notna()]
    if finished.empty:
        return None
    return finished.sort_values(column, ascending=mode == "min", kind="stable").iloc[0]
