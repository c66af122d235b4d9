"""Parsing defense specs, composing defenses, and the one-line errors for bad input."""

from __future__ import annotations

import re

import pytest
import torch

from gradleak.core.errors import GradleakError
from gradleak.core.update import SharedUpdate
from gradleak.defenses import (
    DEFENSES,
    AdditiveNoise,
    Defense,
    NoiseKind,
    PruneScope,
    Pruning,
    apply_defenses,
    available_defenses,
    parse_defense,
    parse_defenses,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- parsing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("noise:gaussian:1e-3", AdditiveNoise(NoiseKind.GAUSSIAN, 1e-3)),
        ("noise:laplacian:1e-2", AdditiveNoise(NoiseKind.LAPLACIAN, 0.01)),
        (" Noise : Laplacian : 0.1 ", AdditiveNoise(NoiseKind.LAPLACIAN, 0.1)),
        ("noise:gaussian:0", AdditiveNoise(NoiseKind.GAUSSIAN, 0.0)),
        ("prune:0.3", Pruning(0.3, PruneScope.LAYER)),
        ("prune:0.3:layer", Pruning(0.3, PruneScope.LAYER)),
        ("prune:0.3:global", Pruning(0.3, PruneScope.GLOBAL)),
        ("prune:0", Pruning(0.0)),
    ],
)
def test_parse_defense(spec: str, expected: Defense) -> None:
    defense = parse_defense(spec)
    assert defense == expected
    assert isinstance(defense, Defense)
    assert parse_defense(defense.spec) == defense  # the canonical spelling round-trips


def test_canonical_spellings() -> None:
    assert parse_defense("noise:gaussian:1e-3").spec == "noise:gaussian:0.001"
    assert parse_defense("noise:laplacian:1e-5").spec == "noise:laplacian:1e-05"
    assert parse_defense("prune:0.3:layer").spec == "prune:0.3"
    assert parse_defense("PRUNE:.3:GLOBAL").spec == "prune:0.3:global"


@pytest.mark.parametrize("specs", [["none"], "none", [" None "], [], (), None])
def test_none_means_no_defense(specs: list[str] | str | None) -> None:
    assert parse_defenses(specs) == []


def test_parse_defenses_keeps_the_order() -> None:
    defenses = parse_defenses(("prune:0.3:global", "noise:laplacian:1e-2"))
    assert [d.spec for d in defenses] == ["prune:0.3:global", "noise:laplacian:0.01"]
    assert [d.spec for d in parse_defenses("prune:0.5")] == ["prune:0.5"]


def test_available_defenses_hint_every_registered_one() -> None:
    hints = available_defenses()
    assert hints[0].startswith("none")
    for name in DEFENSES:
        assert any(h.startswith(f"{name}:") for h in hints)
    assert all("\n" not in h for h in hints)
    assert all(entry.help and "\n" not in entry.help for entry in DEFENSES.values())


# --- bad input --------------------------------------------------------------------------------

BAD_SPECS = [
    (
        "gzip:3",
        "unknown defense 'gzip' in 'gzip:3'; choose one of: noise, prune, topk, precision, "
        "dpsgd, soteria",
    ),
    (
        "",
        "a defense must be spelled NAME[:ARGS] with NAME one of: noise, prune, topk, "
        "precision, dpsgd, soteria, got ''",
    ),
    ("noise", "defense 'noise' takes 2 argument(s), got 0 in 'noise'; spell it noise:KIND"),
    ("noise:gaussian", "defense 'noise' takes 2 argument(s), got 1 in 'noise:gaussian'"),
    ("noise:gaussian:1e-3:2", "defense 'noise' takes 2 argument(s), got 3"),
    ("noise:uniform:1e-3", "unknown noise kind 'uniform'; choose one of: gaussian, laplacian"),
    ("noise:gaussian:lots", "noise variance must be a finite number >= 0, got 'lots'"),
    ("noise:gaussian:", "noise variance must be a finite number >= 0, got ''"),
    ("noise:gaussian:-1e-3", "noise variance must be a finite number >= 0, got -0.001"),
    ("noise:laplacian:inf", "noise variance must be a finite number >= 0, got inf"),
    ("noise:gaussian:nan", "noise variance must be a finite number >= 0, got nan"),
    ("prune", "defense 'prune' takes 1 to 2 argument(s), got 0 in 'prune'; spell it prune:"),
    ("prune:0.3:global:x", "defense 'prune' takes 1 to 2 argument(s), got 3"),
    ("prune:1.5", "prune fraction must be in [0, 1), got 1.5"),
    ("prune:1", "prune fraction must be in [0, 1), got 1.0"),
    ("prune:-0.1", "prune fraction must be in [0, 1), got -0.1"),
    ("prune:nan", "prune fraction must be in [0, 1), got nan"),
    ("prune:half", "prune fraction must be in [0, 1), got 'half'"),
    ("prune:0.3:model", "unknown prune scope 'model'; choose one of: layer, global"),
]


@pytest.mark.parametrize(("spec", "message"), BAD_SPECS)
def test_bad_specs_give_one_line_errors(spec: str, message: str) -> None:
    with pytest.raises(GradleakError, match=re.escape(message)) as info:
        parse_defense(spec)
    assert "\n" not in str(info.value)
    with pytest.raises(GradleakError, match=re.escape(message)):
        parse_defenses(["prune:0.1", spec])


def test_none_cannot_be_combined() -> None:
    with pytest.raises(GradleakError, match="'none' cannot be combined with other defenses"):
        parse_defenses(["none", "prune:0.3"])


def test_direct_construction_is_validated_too() -> None:
    with pytest.raises(GradleakError, match=re.escape("must be in [0, 1), got 2")):
        Pruning(2)
    with pytest.raises(GradleakError, match="must be a finite number >= 0, got -1"):
        AdditiveNoise(NoiseKind.GAUSSIAN, -1)


# --- the interface and composition ------------------------------------------------------------

ALL = ["noise:gaussian:1e-2", "noise:laplacian:1e-2", "prune:0.3", "prune:0.3:global"]


@pytest.mark.parametrize("spec", ALL)
def test_apply_returns_a_new_update_and_leaves_the_input_alone(
    update: SharedUpdate, spec: str
) -> None:
    before = {name: t.clone() for name, t in update.tensors.items()}
    out = parse_defense(spec).apply(update, _gen())
    assert out is not update
    assert out.kind == update.kind
    assert out.metadata == {"num_samples": 8, "lr": 0.1}
    assert list(out.tensors) == list(update.tensors)
    for name, t in update.tensors.items():
        assert torch.equal(t, before[name])  # input unchanged
        assert out.tensors[name].shape == t.shape
        assert out.tensors[name].data_ptr() != t.data_ptr()
    changed = [not torch.equal(out.tensors[n], t) for n, t in update.tensors.items()]
    assert any(changed)  # and the defense did something


def test_composition_order_is_respected(update: SharedUpdate) -> None:
    total = sum(t.numel() for t in update.tensors.values())

    def zeros(u: SharedUpdate) -> int:
        return sum(int((t == 0).sum()) for t in u.tensors.values())

    prune_then_noise = apply_defenses(
        update, parse_defenses(["prune:0.5:global", "noise:gaussian:1e-2"]), _gen()
    )
    assert zeros(prune_then_noise) == 0

    noise_then_prune = apply_defenses(
        update, parse_defenses(["noise:gaussian:1e-2", "prune:0.5:global"]), _gen()
    )
    assert zeros(noise_then_prune) == int(0.5 * total + 0.5)


def test_apply_defenses_equals_applying_each_in_turn(update: SharedUpdate) -> None:
    defenses = parse_defenses(["noise:laplacian:1e-3", "prune:0.2", "noise:gaussian:1e-4"])
    by_hand, generator = update, _gen(9)
    for defense in defenses:
        by_hand = defense.apply(by_hand, generator)
    composed = apply_defenses(update, defenses, _gen(9))
    for name in update.tensors:
        assert torch.equal(composed.tensors[name], by_hand.tensors[name])


def test_no_defense_gives_the_update_back_unchanged(update: SharedUpdate) -> None:
    out = apply_defenses(update, parse_defenses(["none"]), _gen())
    for name, t in update.tensors.items():
        assert torch.equal(out.tensors[name], t)
