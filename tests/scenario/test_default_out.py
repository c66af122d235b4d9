"""Default run directories: runs that differ in any setting that changes the result never
share a directory, and the same settings always name the same one."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from gradleak.scenario.config import RunConfig
from gradleak.studies.peers import DecentralizedConfig

# Where a run goes, whether a bar is shown and which device computes it do not change its
# result.
NOT_RESULTS = frozenset({"out", "progress", "device"})
# Values that the name's parts read, or that are parsed: these must be real.
REAL_VALUES: dict[str, Any] = {
    "attack": "ig",
    "attack_options": {"iterations": 5},
    "defenses": ("prune:0.5",),
    "image": Path("/images/cat.png"),
    "model_args": {"width": 8},
}


def _other(value: Any) -> Any:
    """A different value of the same kind (the name does not validate settings)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    if isinstance(value, str):
        return f"{value}-other"
    if isinstance(value, tuple):
        return (*value, 99)
    if value is None:
        return 7
    raise AssertionError(f"no other value for {value!r}")


def _changes() -> list[tuple[str, Any]]:
    base = RunConfig()
    return [
        (f.name, REAL_VALUES[f.name] if f.name in REAL_VALUES else _other(getattr(base, f.name)))
        for f in dataclasses.fields(RunConfig)
        if f.name not in NOT_RESULTS
    ]


@pytest.mark.parametrize(("key", "value"), _changes(), ids=[key for key, _ in _changes()])
def test_changing_any_result_setting_changes_the_name(key: str, value: Any) -> None:
    changed = dataclasses.replace(RunConfig(), **{key: value})
    assert changed.default_out() != RunConfig().default_out()
    assert changed.default_out().parent == Path("runs")


def test_the_same_settings_give_the_same_name() -> None:
    options = {"iterations": 5, "lr": 0.1}
    a = RunConfig(attack_options=options, defenses=("prune:0.5",), seed=3)
    b = RunConfig(attack_options=dict(reversed(options.items())), defenses=("prune:0.5",), seed=3)
    assert a.default_out() == b.default_out()
    # Settings spelled differently but resolved alike: the preset's own value, a defense's
    # canonical spelling.
    assert RunConfig(attack_options={"iterations": 300}).default_out() == RunConfig().default_out()
    assert (
        RunConfig(defenses=("prune:0.50",)).default_out()
        == RunConfig(defenses=("prune:0.5",)).default_out()
    )
    # Where the run goes and the progress bar are not part of the result.
    assert (
        RunConfig(out=Path("elsewhere"), progress=False).default_out() == RunConfig().default_out()
    )


def test_the_name_stays_readable() -> None:
    config = RunConfig(attack="ig", model="resnet20", protocol="fedavg", users=2, seed=4)
    assert config.default_out().name.startswith("ig-resnet20-cifar10-0-b1-u2-fedavg-s4-")


@pytest.mark.parametrize(
    "change",
    [
        {"peers": 3},
        {"topology": "full"},
        {"mixing": "uniform"},
        {"rounds": 2},
        {"sgd_lr": 0.5},
        {"run": RunConfig(attack_options={"iterations": 5})},
        {"run": RunConfig(labels_known=True)},
    ],
    ids=lambda change: next(iter(change)),
)
def test_simulations_that_differ_have_different_names(change: dict[str, Any]) -> None:
    base = DecentralizedConfig()
    assert dataclasses.replace(base, **change).default_out() != base.default_out()
    assert DecentralizedConfig().default_out() == base.default_out()
