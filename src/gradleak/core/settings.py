"""Settings: typed configs filled from YAML/JSON files and flags with one-line errors, and the
one conversion of settings and results to plain JSON/YAML values."""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from gradleak.core.errors import GradleakError

T = TypeVar("T")


def read_mapping(path: Path) -> dict[str, Any]:
    """Read a YAML or JSON file holding one mapping.

    Args:
        path: the file; `.json` is read as JSON, anything else as YAML.

    Returns:
        The mapping ({} for an empty file).

    Raises:
        GradleakError: a missing path or a folder, a file that is not UTF-8 text, text that
            does not parse, or a document that is not a mapping.
    """
    path = Path(path)
    if path.is_dir():
        raise GradleakError(f"config file {path} is a folder; pass a YAML or JSON file")
    if not path.is_file():
        raise GradleakError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GradleakError(f"config file {path} cannot be read as UTF-8 text: {exc}") from exc
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    # ValueError: an integer longer than Python converts (JSONDecodeError is one too);
    # RecursionError: brackets nested deeper than the parsers recurse.
    except (ValueError, RecursionError, yaml.YAMLError) as exc:
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


MAX_SEED = 2**63 - 1


def require_counts(settings: object, keys: tuple[str, ...]) -> None:
    """Refuse any of `settings`' fields `keys` that is not an integer of at least 1 (None
    passes: a default still to be resolved).

    Raises:
        GradleakError: naming the first such field and its value.
    """
    for key in keys:
        value = getattr(settings, key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise GradleakError(f"{key} must be an integer of at least 1, got {value!r}")


def require_seed(seed: object) -> None:
    """Refuse a seed that is not an integer in 0..2**63-1 (what torch.Generator takes).

    Raises:
        GradleakError: naming the value.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise GradleakError(f"seed must be an integer in 0..2**63-1, got {seed!r}")


def to_plain(value: Any) -> Any:
    """`value` as JSON- and YAML-safe primitives, for every file gradleak writes.

    Dataclasses become mappings of their fields, paths strings, enums their values, tuples
    lists, and non-finite floats None (JSON has no NaN or Infinity); mappings and lists are
    converted item by item.
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return to_plain(value.value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_plain(v) for v in value]
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
        args = typing.get_args(hint) or (Any, ...)
        if origin is tuple and Ellipsis not in args:
            # A fixed-length tuple (e.g. a range A-B): exactly one value per position.
            if len(value) != len(args):
                raise GradleakError(
                    f"{where} needs exactly {len(args)} values, not {len(value)}: {value!r}"
                )
            return tuple(_coerce(v, h, where) for v, h in zip(value, args, strict=True))
        items = [_coerce(v, args[0], where) for v in value]
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
