"""Magnitude pruning against ground truth: how many entries it zeroes, and which."""

from __future__ import annotations

import pytest
import torch

from gradleak.core.errors import GradleakError
from gradleak.core.update import SharedUpdate
from gradleak.defenses import PruneScope, Pruning, TopK, parse_defense, pruning, sparsify
from gradleak.defenses.pruning import MagnitudeMask, parse_magnitude_mask

GEN = torch.Generator().manual_seed(0)  # pruning draws nothing; the interface takes one


def _signed_permutation(values: torch.Tensor, seed: int) -> torch.Tensor:
    """`values` in a random order with random signs: magnitudes known, positions not."""
    g = torch.Generator().manual_seed(seed)
    shuffled = values[torch.randperm(values.numel(), generator=g)]
    signs = torch.randint(0, 2, (values.numel(),), generator=g) * 2 - 1
    return shuffled * signs


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.3, 0.5, 0.75, 0.99])
def test_per_layer_zeroes_the_smallest_fraction_of_each_tensor(fraction: float) -> None:
    # Magnitudes 1..n, so the k smallest are exactly those with |v| <= k.
    sizes = {"a": 100, "b": 40, "c": 7}
    tensors = {
        name: _signed_permutation(torch.arange(1.0, n + 1), seed=i).reshape(-1, 1)
        for i, (name, n) in enumerate(sizes.items())
    }
    out = parse_defense(f"prune:{fraction}").apply(SharedUpdate(tensors), GEN)
    for name, n in sizes.items():
        k = int(fraction * n + 0.5)
        before, after = tensors[name], out.tensors[name]
        assert after.shape == before.shape
        assert int((after == 0).sum()) == k
        small = before.abs() <= k
        assert (after[small] == 0).all()
        assert torch.equal(after[~small], before[~small])  # the largest kept bit for bit


def test_global_ranks_all_tensors_together() -> None:
    # Every entry of "small" is smaller than every entry of "large".
    small = _signed_permutation(torch.arange(1.0, 51), seed=1).reshape(5, 10)
    large = _signed_permutation(torch.arange(51.0, 151), seed=2).reshape(10, 10)
    update = SharedUpdate({"small": small, "large": large})

    out = parse_defense("prune:0.5:global").apply(update, GEN)  # 75 of 150
    assert int((out.tensors["small"] == 0).sum()) == 50
    assert int((out.tensors["large"] == 0).sum()) == 25
    kept = large.abs() > 75
    assert (out.tensors["large"][~kept] == 0).all()
    assert torch.equal(out.tensors["large"][kept], large[kept])

    per_layer = parse_defense("prune:0.5").apply(update, GEN)
    assert int((per_layer.tensors["small"] == 0).sum()) == 25
    assert int((per_layer.tensors["large"] == 0).sum()) == 50


@pytest.mark.parametrize("fraction", [0.05, 0.3, 0.9])
def test_global_zeroes_round_p_n_of_the_total(update: SharedUpdate, fraction: float) -> None:
    total = sum(t.numel() for t in update.tensors.values())
    everything = torch.cat([t.flatten() for t in update.tensors.values()])
    k = int(fraction * total + 0.5)
    threshold = everything.abs().sort().values[k - 1]  # entries are distinct

    out = Pruning(fraction, PruneScope.GLOBAL).apply(update, GEN)
    zeros = sum(int((t == 0).sum()) for t in out.tensors.values())
    assert zeros == k
    for name, before in update.tensors.items():
        after = out.tensors[name]
        assert (after[before.abs() <= threshold] == 0).all()
        assert torch.equal(after[before.abs() > threshold], before[before.abs() > threshold])


def test_rounds_half_up() -> None:
    tensors = {"a": torch.arange(1.0, 11), "b": torch.arange(1.0, 5)}
    out = Pruning(0.25).apply(SharedUpdate(tensors), GEN)  # 2.5 -> 3 and 1.0 -> 1
    assert torch.equal(out.tensors["a"], torch.tensor([0, 0, 0, 4, 5, 6, 7, 8, 9, 10.0]))
    assert torch.equal(out.tensors["b"], torch.tensor([0, 2, 3, 4.0]))


def test_ties_are_broken_by_position() -> None:
    tied = torch.tensor([[-2.0, 2.0, 2.0, -2.0, 2.0], [2.0, -2.0, 2.0, 2.0, -2.0]])
    out = Pruning(0.3).apply(SharedUpdate({"w": tied}), GEN)
    expected = tied.clone()
    expected[0, :3] = 0
    assert torch.equal(out.tensors["w"], expected)

    a, b = torch.ones(3), torch.ones(3)
    out = Pruning(0.5, PruneScope.GLOBAL).apply(SharedUpdate({"a": a, "b": b}), GEN)
    assert torch.equal(out.tensors["a"], torch.zeros(3))
    assert torch.equal(out.tensors["b"], torch.ones(3))


def test_existing_zeros_count_among_the_pruned() -> None:
    w = torch.tensor([0.0, 0.0, 3.0, -1.0, 5.0, 0.5, 4.0, -2.0, 6.0, 7.0])
    out = Pruning(0.3).apply(SharedUpdate({"w": w}), GEN)
    assert torch.equal(out.tensors["w"], torch.tensor([0, 0, 3, -1, 5, 0, 4, -2, 6, 7.0]))


def test_keeps_dtype_and_shape_and_zero_fraction_is_identity(update: SharedUpdate) -> None:
    doubled = SharedUpdate({k: v.double() for k, v in update.tensors.items()})
    out = Pruning(0.0).apply(doubled, GEN)
    for name, before in doubled.tensors.items():
        assert out.tensors[name].dtype == torch.float64
        assert torch.equal(out.tensors[name], before)


@pytest.mark.parametrize(
    ("defense", "usage", "fraction_range"),
    [(Pruning, pruning.USAGE, pruning.FRACTION_RANGE), (TopK, sparsify.USAGE, "in (0, 1]")],
)
def test_parse_magnitude_mask_builds_either_defense(
    defense: type[MagnitudeMask], usage: str, fraction_range: str
) -> None:
    def parse(args: list[str]) -> MagnitudeMask:
        return parse_magnitude_mask(defense, args, usage, fraction_range)

    assert parse(["0.25"]) == defense(0.25, PruneScope.LAYER)
    assert parse([" 0.5 ", " GLOBAL "]) == defense(0.5, PruneScope.GLOBAL)
    assert type(parse(["0.5"])) is defense
    name = defense.name
    with pytest.raises(GradleakError) as info:
        parse([])
    assert str(info.value) == (
        f"defense {name!r} takes 1 to 2 argument(s), got 0 in {name!r}; spell it {usage}"
    )
    with pytest.raises(GradleakError) as info:
        parse(["half"])
    assert str(info.value) == f"{name} fraction must be {fraction_range}, got 'half'"
    with pytest.raises(GradleakError) as info:
        parse(["0.5", "row"])
    assert str(info.value) == f"unknown {name} scope 'row'; choose one of: layer, global"
