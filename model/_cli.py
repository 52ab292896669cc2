"""Flags generated from the config dataclasses, and config files (YAML/JSON) merged under them."""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from data_io import ConfigError


def add_dataclass_flags(parser: argparse.ArgumentParser, cls: type, exclude: set[str] = frozenset()) -> None:
    """One flag per field: --field-name. Defaults are suppressed so that only given flags override."""
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(cls.__name__)
    for f in dataclasses.fields(cls):
        if f.name in exclude:
            continue
        flag = "--" + f.name.replace("_", "-")
        kind, optional = _unwrap(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_text = f.metadata.get("help", "")
        help_text = f"{help_text} (default: {default})".strip()
        kw: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text}
        # aliases: for a bool {"--no-x": False} (a flag setting one value), else ["--other-name"] (same flag).
        aliases = f.metadata.get("aliases", {})
        names = [flag] if kind is bool else [flag, *aliases]
        if kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
            for alias, value in aliases.items():
                group.add_argument(alias, action="store_const", const=value, dest=f.name, default=argparse.SUPPRESS,
                                   help=f"same as --{'' if value else 'no-'}{f.name.replace('_', '-')}")
        elif typing.get_origin(kind) is list:
            (item,) = typing.get_args(kind)
            # repeat / action "extend": `--x A --x B` (and `--x A B`) collect every value, not the last flag's.
            action = "extend" if f.metadata.get("repeat") or f.metadata.get("action") == "extend" else "store"
            group.add_argument(*names, nargs="+", type=item, metavar=item.__name__.upper(), action=action, **kw)
        elif typing.get_origin(kind) is Literal:
            group.add_argument(*names, choices=list(typing.get_args(kind)), **kw)
        else:
            group.add_argument(*names, type=kind, metavar=kind.__name__.upper(), **kw)


def _unwrap(hint: Any) -> tuple[Any, bool]:
    """`X | None` -> (X, True); `str | list[str]` -> (list[str], ...): one value or several."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        lists = [a for a in args if typing.get_origin(a) is list]
        return (lists or args)[0], type(None) in typing.get_args(hint)
    return hint, False


def section_fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def load_config_file(path: str) -> dict:
    """A YAML or JSON file: either nested like a checkpoint's config ({data: {...}, ...}) or flat."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--config {path}: no such file")
    try:
        raw = yaml.safe_load(p.read_text()) if p.suffix in (".yaml", ".yml") else json.loads(p.read_text())
    except (yaml.YAMLError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"--config {path}: does not parse ({first}); fix the file's syntax") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"--config {path}: expected a mapping of config keys, got {type(raw).__name__}")
    return raw


def build(cls: type, values: dict, where: str) -> Any:
    """Instantiate a (possibly nested) config dataclass, refusing unknown keys."""
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known keys are {sorted(known)}")
    kwargs = {}
    for name, value in values.items():
        kind, _ = _unwrap(hints[name])
        if dataclasses.is_dataclass(kind):
            kwargs[name] = build(kind, value or {}, f"{where}.{name}")
        else:
            kwargs[name] = _coerce(value, kind, f"{where}: {name}")
    return cls(**kwargs)


def _coerce(value: Any, kind: Any, where: str) -> Any:
    if value is None:
        return None
    try:
        if kind is bool:
            if not isinstance(value, bool):
                raise ValueError
            return value
        if typing.get_origin(kind) is list:
            (item,) = typing.get_args(kind)
            seq = value if isinstance(value, (list, tuple)) else [value]
            return [item(v) for v in seq]
        if typing.get_origin(kind) is Literal:
            if value not in typing.get_args(kind):
                raise ValueError
            return value
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where} = {value!r} is not a valid {getattr(kind, '__name__', kind)}") from None
