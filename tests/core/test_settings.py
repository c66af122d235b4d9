"""RunConfig and load_run_config: defaults, then the file, then flags; bad keys are one-liners."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gradleak.core import UpdateKind
from gradleak.core.errors import GradleakError
from gradleak.core.settings import read_mapping, replace_checked, to_plain
from gradleak.scenario import RunConfig, load_run_config


def _write(tmp_path: Path, text: str, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_without_file_or_overrides() -> None:
    config = load_run_config(None, {})
    assert config == RunConfig()
    assert (config.attack, config.model, config.dataset) == ("dlg", "lenet", "cifar10")
    assert config.batch_size == 1 and config.indices == (0,)
    assert config.data_root is None and config.labels_known is False


def test_file_then_overrides(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "attack: ig\nmodel: resnet20-4\nseed: 3\nindices: [2, 5]\nbatch_size: 2\n"
        "data_root: ../shared/data\nattack_options: {iterations: 2000, restarts: 2}\n",
    )
    config = load_run_config(path, {"seed": 9, "attack_options": {"restarts": 4, "lr": 0.01}})
    assert (config.attack, config.model, config.seed) == ("ig", "resnet20-4", 9)
    assert config.indices == (2, 5)
    assert config.data_root == Path("../shared/data")
    # Attack options merge: the file's, then the flags' (which win on a clash).
    assert config.attack_options == {"iterations": 2000, "restarts": 4, "lr": 0.01}


def test_json_file(tmp_path: Path) -> None:
    path = _write(tmp_path, json.dumps({"model": "convnet", "labels_known": True}), "run.json")
    config = load_run_config(path, {})
    assert config.model == "convnet" and config.labels_known is True


def test_single_index_is_a_tuple(tmp_path: Path) -> None:
    assert load_run_config(_write(tmp_path, "indices: 4\n"), {}).indices == (4,)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bogus: 1\n", "unknown key 'bogus' in config file"),
        ("seed: 1.5\n", "seed must be an integer, not 1.5"),
        ("batch_size: two\n", "batch_size must be an integer"),
        ("labels_known: 1\n", "labels_known must be true or false"),
        ("out: 5\n", "out must be a path"),
        ("indices: [a]\n", "indices must be an integer"),
        ("- 1\n- 2\n", "must hold a mapping"),
        ("attack: [unclosed\n", "cannot be parsed"),
        ("batch_size: 0\n", "batch size must be at least 1"),
    ],
)
def test_bad_config_files(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(GradleakError, match=message) as exc:
        load_run_config(path, {})
    assert "\n" not in str(exc.value)


def test_unknown_key_message_lists_allowed_keys(tmp_path: Path) -> None:
    with pytest.raises(GradleakError) as exc:
        load_run_config(_write(tmp_path, "atack: ig\n"), {})
    message = str(exc.value)
    assert "'atack'" in message and str(tmp_path / "run.yaml") in message
    assert "attack_options" in message and "batch_size" in message


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(GradleakError, match="config file not found"):
        load_run_config(tmp_path / "absent.yaml", {})
    assert load_run_config(_write(tmp_path, ""), {}) == RunConfig()


def test_unknown_override_is_named() -> None:
    with pytest.raises(GradleakError, match="unknown key 'colour' in arguments"):
        load_run_config(None, {"colour": "red"})


@pytest.mark.parametrize("value", ["5", "[1, 2]", "fast"])
def test_attack_options_must_be_a_mapping(tmp_path: Path, value: str) -> None:
    with pytest.raises(GradleakError, match="attack_options"):
        load_run_config(_write(tmp_path, f"attack_options: {value}\n"), {})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"dataset": "svhn"}, "unknown dataset 'svhn'; choose one of: cifar10, cifar100"),
        ({"model_mode": "inference"}, "model_mode 'inference' is not one of: train, eval"),
        ({"batch_size": 0}, "batch size must be at least 1, got 0"),
        ({"indices": ()}, "at least one image index"),
        ({"indices": (-1,)}, "must be non-negative"),
        ({"indices": (0, 1), "batch_size": 3}, "2 indices given for batch size 3"),
        ({"image": "x.png", "batch_size": 2}, "--image attacks one image"),
        ({"num_classes": 1}, "--num-classes must be at least 2, got 1"),
        ({"image_size": 2}, "--image-size must be at least 4, got 2"),
    ],
)
def test_validation_errors(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(GradleakError, match=message):
        load_run_config(None, overrides)


@pytest.mark.parametrize(
    ("indices", "batch_size", "expected"),
    [((0,), 1, [0]), ((3,), 4, [3, 4, 5, 6]), ((7, 2, 5), 3, [7, 2, 5])],
)
def test_batch_indices(indices: tuple[int, ...], batch_size: int, expected: list[int]) -> None:
    assert RunConfig(indices=indices, batch_size=batch_size).batch_indices() == expected


def test_default_out() -> None:
    # A readable stem, then a digest of the settings that change the result.
    default = str(RunConfig().default_out())
    assert re.fullmatch(r"runs/dlg-lenet-cifar10-0-b1-s0-[0-9a-f]{8}", default)
    config = RunConfig(attack="ig", model="resnet20", image=Path("/x/cat.png"), seed=2)
    assert re.fullmatch(r"runs/ig-resnet20-cat-b1-s2-[0-9a-f]{8}", str(config.default_out()))


def test_to_plain_round_trips_through_replace_checked() -> None:
    config = RunConfig(
        data_root=Path("/data"), indices=(1, 2), batch_size=2, attack_options={"lr": 0.5}
    )
    plain = to_plain(config)
    assert plain["data_root"] == "/data" and plain["indices"] == [1, 2]
    assert replace_checked(RunConfig(), plain, "test") == config


def test_read_mapping_rejects_lists(tmp_path: Path) -> None:
    with pytest.raises(GradleakError, match="must hold a mapping"):
        read_mapping(_write(tmp_path, "[1, 2]", "list.json"))


def test_fixed_length_tuples_take_exactly_one_value_per_position() -> None:
    @dataclass(frozen=True)
    class Ranged:
        span: tuple[int, int] | None = None
        many: tuple[int, ...] = ()

    assert replace_checked(Ranged(), {"span": [3, 9]}, "here").span == (3, 9)
    assert replace_checked(Ranged(), {"many": [1, 2, 3]}, "here").many == (1, 2, 3)
    with pytest.raises(GradleakError, match="here: span needs exactly 2 values, not 3"):
        replace_checked(Ranged(), {"span": [1, 2, 3]}, "here")
    with pytest.raises(GradleakError, match="span must be an integer"):
        replace_checked(Ranged(), {"span": [1, "x"]}, "here")


def test_to_plain_makes_results_json_safe() -> None:
    value = {"a": (1.0, math.nan), "p": Path("x/y"), "k": UpdateKind.GRADIENT, "i": math.inf}
    assert to_plain(value) == {"a": [1.0, None], "p": "x/y", "k": "gradient", "i": None}


@pytest.mark.parametrize(
    "tagged",
    [
        "attack: !!python/object/apply:os.system ['touch {marker}']\n",
        "!!python/object/apply:os.system ['touch {marker}']\n",
        "attack_options: !!python/object/new:dict {{}}\n",
        "attack: !!python/name:os.system\n",
    ],
)
def test_a_config_file_never_builds_python_objects(tmp_path: Path, tagged: str) -> None:
    marker = tmp_path / "ran"
    config = tmp_path / "run.yaml"
    config.write_text(tagged.format(marker=marker))
    with pytest.raises(GradleakError, match="cannot be parsed"):
        read_mapping(config)
    assert not marker.exists()
