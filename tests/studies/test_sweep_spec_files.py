"""Sweep spec files hold plain data only, and any text or mapping gives a spec or one line."""

from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gradleak.core.errors import GradleakError
from gradleak.scenario.config import RunConfig
from gradleak.studies.sweep.spec import SPEC_KEYS, SweepSpec, parse_spec, read_spec


def _read(tmp_path: Path, text: str) -> SweepSpec:
    path = tmp_path / "spec.yaml"
    path.write_text(text, encoding="utf-8")
    return read_spec(path)


@pytest.mark.parametrize(
    ("text", "line", "tag"),
    [
        ("attacks: !!python/object/apply:os.system ['touch {marker}']\n", 1, "!!python/object"),
        ("attacks: [dlg]\nname: !!python/name:os.system\n", 2, "!!python/name:os.system"),
        ("attacks: [dlg]\nbase:\n  data_root: !!python/object/new:pathlib.Path []\n", 3, ""),
        ("attacks: [dlg]\noptions: !custom {dlg: {iterations: 2}}\n", 2, "!custom"),
        ("attacks: [dlg]\nimages: !!set {0: null}\n", 2, "!!set"),
        ("attacks: [dlg]\nname: !!binary aGVsbG8=\n", 2, "!!binary"),
        ("attacks:\n  - !dlg dlg\n", 2, "!dlg"),
        ("? !!python/tuple [a, b]\n: 1\nattacks: [dlg]\n", 1, "!!python/tuple"),
        ("!!python/object:collections.OrderedDict\nattacks: [dlg]\n", 1, "!!python/object"),
    ],
)
def test_any_tag_beyond_plain_data_is_refused_with_its_line_and_never_built(
    tmp_path: Path, text: str, line: int, tag: str
) -> None:
    marker = tmp_path / "constructed"
    with pytest.raises(GradleakError) as error:
        _read(tmp_path, text.replace("{marker}", str(marker)))
    message = str(error.value)
    assert "\n" not in message
    assert f"line {line}:" in message
    assert "is not allowed" in message and tag in message
    assert not marker.exists()


def test_plain_tags_and_anchors_are_plain_data(tmp_path: Path) -> None:
    spec = _read(
        tmp_path,
        "name: !!str 2024\nattacks: &a [dlg]\nimages: !!seq [0, 1]\n"
        "options: {dlg: {iterations: !!int '3'}}\nsuccess_psnr: !!float 12\n",
    )
    assert spec.name == "2024" and spec.attacks == ("dlg",) and spec.images == (0, 1)
    assert spec.options == {"dlg": {"iterations": 3}} and spec.success_psnr == 12.0


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("attacks: &a [dlg, *a]\n", "line 1: an alias refers to a value that contains it"),
        ("attacks: [dlg]\nattacks: [ig]\n", "line 2: the key 'attacks' is given twice"),
        ("attacks: [dlg]\n[a]: 1\n", "line 2: a key must be a plain value"),
        ("attacks: [dlg]\nname: 2020-13-45\n", "line 2: cannot read the value '2020-13-45'"),
        ("attacks: [dlg]\nseeds: [" + "9" * 5000 + "]\n", "line 2: cannot read the value"),
        ("attacks: " + "[" * 200 + "]" * 200 + "\n", "nest"),
        ("attacks: [dlg]\n<<: {name: x}\n", "line 2: unknown key '<<'"),
        ("attacks: [dlg]\n\x00\n", "cannot be read"),
        ("---\nattacks: [dlg]\n---\nattacks: [ig]\n", "cannot be read"),
    ],
)
def test_yaml_that_is_not_one_plain_mapping_is_one_line(
    tmp_path: Path, text: str, fragment: str
) -> None:
    with pytest.raises(GradleakError) as error:
        _read(tmp_path, text)
    assert "\n" not in str(error.value)
    assert fragment in str(error.value)


def test_aliases_cannot_unfold_a_small_file_into_a_huge_one(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 12)]
    with pytest.raises(GradleakError, match="unfolds to more than 100000 values"):
        _read(tmp_path, "\n".join(["attacks: [dlg]", *lines]) + "\n")


# --- any input: a spec or one line --------------------------------------------------------

# Keys a spec or its settings may hold, so that generated mappings reach the deeper checks.
_KEYS = [*SPEC_KEYS, *(f.name for f in fields(RunConfig))]
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["dlg", "idlg", "ig", "analytic", "rgap", "lenet", "mlp", "cnn6", "none"]),
    st.sampled_from(["fedsgd", "fedavg", "fedadmm", "prune:0.5", "noise:gaussian:1e-3"]),
    st.sampled_from(["0-3", "7-2", "0-99999999", "cifar10", "mnist", "folder", "../x"]),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=8), st.sampled_from(_KEYS)), inner, max_size=4),
    ),
    max_leaves=12,
)
_SPECS = st.dictionaries(st.sampled_from(list(SPEC_KEYS)), _VALUES, max_size=6)
# Most generated specs keep a valid attack, so that the other keys are checked too.
_SPECS = st.one_of(_SPECS, _SPECS.map(lambda spec: {**spec, "attacks": ["dlg"]}))
# Text built of YAML's own pieces (indicators, tags, anchors, keys) as well as characters.
_PIECES = [*string.printable, "!!python/name:os.system ", "!x ", "&a ", "*a", "- ", ": ", "? "]
_PIECES += ["attacks: [dlg]\n", "images: ", "base:\n  ", "{", "}", "[", "]", "\n  "]
_YAMLISH = st.lists(st.sampled_from(_PIECES), max_size=40).map("".join)


def _spec_or_one_line(call: Callable[[], SweepSpec]) -> None:
    try:
        result = call()
    except GradleakError as exc:
        assert "\n" not in str(exc)
        return
    assert isinstance(result, SweepSpec)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_SPECS)
def test_any_mapping_gives_a_spec_or_one_line(spec: dict[str, Any]) -> None:
    _spec_or_one_line(lambda: parse_spec(spec))


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.one_of(_YAMLISH, _SPECS.map(yaml.safe_dump)))
def test_any_text_gives_a_spec_or_one_line(tmp_path: Path, text: str) -> None:
    _spec_or_one_line(lambda: _read(tmp_path, text))


def test_a_folder_given_as_the_spec_is_named_as_a_folder(tmp_path: Path) -> None:
    with pytest.raises(GradleakError, match="is a folder, not a file"):
        read_spec(tmp_path)
