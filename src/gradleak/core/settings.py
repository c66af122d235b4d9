"""Typed configs filled from YAML/JSON files and CLI flags, with one-line errors."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from gradleak.core.errors import GradleakError

T = TypeVar("T")


def read_mapping(path: Path) -> dict[str, Any]:
    """Read a YAML or JSON file holding one mapping."""
    path = Path(path)
    if not path.is_file():
        raise GradleakError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GradleakError(f"config file {path} cannot be read as UTF-8 text: {exc}") from exc
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise GradleakError(f"config file {path} cannot be parsed: {first_line}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise GradleakError(f"config file {path} must hold a mapping of keys to values")
    return data


def replace_checked(instance: T, values: Mapping[str, Any], where: str) -> T:
    """Return `instance` with `values` applied; unknown keys and wrong types are errors."""
    fields = {f.name: f for f in dataclasses.fields(instance)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(type(instance))
    coerced = {}
    for key, value in values.items():
        if key not in fields:
            raise GradleakError(
                f"unknown key {key!r} in {where}; allowed keys: {', '.join(sorted(fields))}"
            )
        coerced[key] = _coerce(value, hints[key], f"{where}: {key}")
    return dataclasses.replace(instance, **coerced)  # type: ignore[type-var]


def to_plain(instance: Any) -> dict[str, Any]:
    """A dataclass as JSON/YAML-safe primitives (paths become strings)."""
    return {k: _plain(v) for k, v in dataclasses.asdict(instance).items()}


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, where)
            except GradleakError as exc:
                errors.append(str(exc))
        raise GradleakError(errors[0] if errors else f"{where} cannot be {value!r}")
    if origin is dict:
        if not isinstance(value, Mapping):
            raise GradleakError(f"{where} must be a mapping of keys to values, not {value!r}")
        return dict(value)
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            value = [value]
        (item_hint, *_rest) = typing.get_args(hint) or (Any,)
        items = [_coerce(v, item_hint, where) for v in value]
        return tuple(items) if origin is tuple else items
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise GradleakError(f"{where} must be true or false, not {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise GradleakError(f"{where} must be an integer, not {value!r}")
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise GradleakError(f"{where} must be a number, not {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise GradleakError(f"{where} must be a string, not {value!r}")
    if hint is Path:
        if isinstance(value, str | Path):
            return Path(value)
        raise GradleakError(f"{where} must be a path, not {value!r}")
    return value
