"""Property tests: any config text and any overrides give a config or one GradleakError."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gradleak.core.errors import GradleakError
from gradleak.core.settings import read_mapping, replace_checked, to_plain
from gradleak.scenario import RunConfig, load_run_config

SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
FIELDS = [f.name for f in dataclasses.fields(RunConfig)]

# Values a YAML or JSON file can hold, odd ones included.
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["lenet", "mlp", "fedavg", "folder", "x.png", "ig", "1e999", "nan", "-1"])
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)
KEYS = st.sampled_from(FIELDS) | st.text(max_size=12)
MAPPINGS = st.dictionaries(KEYS, VALUES, max_size=6)
# Mostly real keys with plausible values, so validation (not only coercion) is exercised.
NUMBERS = st.integers(min_value=-3, max_value=2**64) | st.floats(allow_nan=True)
PLAUSIBLE = st.dictionaries(
    st.sampled_from(FIELDS), NUMBERS | st.lists(NUMBERS, max_size=3) | SCALARS, max_size=6
)


def _outcome(call: Any) -> object:
    try:
        return call()
    except GradleakError as exc:
        assert "\n" not in str(exc), str(exc)
        return exc


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("configs")


@SETTINGS
@given(text=st.text(max_size=200), suffix=st.sampled_from([".yaml", ".json", ".yml", ""]))
def test_any_text_is_a_mapping_or_one_error(folder: Path, text: str, suffix: str) -> None:
    path = folder / f"run{suffix}"
    path.write_text(text, encoding="utf-8")
    result = _outcome(lambda: read_mapping(path))
    assert isinstance(result, dict | GradleakError)


@SETTINGS
@given(data=st.binary(max_size=200))
def test_any_bytes_are_a_mapping_or_one_error(folder: Path, data: bytes) -> None:
    path = folder / "run.yaml"
    path.write_bytes(data)
    assert isinstance(_outcome(lambda: read_mapping(path)), dict | GradleakError)


@pytest.mark.parametrize(
    "text", ["1" * 5000, "a: " + "9" * 5000, "[" * 50_000, "{" * 50_000, '{"a": ' * 50_000]
)
@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_huge_integers_and_deep_nesting_are_parse_errors(
    tmp_path: Path, text: str, suffix: str
) -> None:
    path = tmp_path / f"run{suffix}"
    path.write_text(text)
    with pytest.raises(GradleakError, match="cannot be parsed"):
        read_mapping(path)


@SETTINGS
@given(values=MAPPINGS | PLAUSIBLE)
def test_replace_checked_gives_a_config_or_one_error(values: dict[str, Any]) -> None:
    result = _outcome(lambda: replace_checked(RunConfig(), values, "arguments"))
    assert isinstance(result, RunConfig | GradleakError)


@SETTINGS
@given(
    document=MAPPINGS | PLAUSIBLE,
    overrides=MAPPINGS | PLAUSIBLE,
    as_json=st.booleans(),
)
def test_load_run_config_gives_a_valid_config_or_one_error(
    folder: Path, document: dict[str, Any], overrides: dict[str, Any], as_json: bool
) -> None:
    path = folder / ("run.json" if as_json else "run.yaml")
    try:
        text = json.dumps(document) if as_json else yaml.safe_dump(document)
    except (TypeError, ValueError, yaml.YAMLError):
        return  # not a document a file can hold
    path.write_text(text, encoding="utf-8")
    result = _outcome(lambda: load_run_config(path, dict(overrides)))
    assert isinstance(result, RunConfig | GradleakError)
    if isinstance(result, RunConfig):
        # A config that passed is valid and survives its own round trip through plain values.
        plain = to_plain(result)
        again = replace_checked(RunConfig(), plain, "round trip")
        assert again.validate() == result


@SETTINGS
@given(overrides=PLAUSIBLE)
def test_overrides_alone_give_a_valid_config_or_one_error(overrides: dict[str, Any]) -> None:
    result = _outcome(lambda: load_run_config(None, dict(overrides)))
    assert isinstance(result, RunConfig | GradleakError)


def test_a_folder_given_as_a_config_file(tmp_path: Path) -> None:
    with pytest.raises(GradleakError, match="is a folder; pass a YAML or JSON file"):
        read_mapping(tmp_path)


@pytest.mark.parametrize("options", [None, "iterations=3", [1, 2]])
def test_attack_options_overrides_must_be_a_mapping(options: object) -> None:
    with pytest.raises(GradleakError, match="attack_options must be a mapping of keys to values"):
        load_run_config(None, {"attack_options": options})
