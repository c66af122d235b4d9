"""Top-k sparsification against ground truth: how many entries it keeps, and which."""

from __future__ import annotations

import pytest
import torch

from gradleak.core.errors import GradleakError
from gradleak.core.update import SharedUpdate, UpdateKind
from gradleak.defenses.pruning import PruneScope
from gradleak.defenses.sparsify import TopK, parse

GEN = torch.Generator().manual_seed(0)  # top-k draws nothing; the interface takes one


def _signed_permutation(values: torch.Tensor, seed: int) -> torch.Tensor:
    """`values` in a random order with random signs: magnitudes known, positions not."""
    g = torch.Generator().manual_seed(seed)
    shuffled = values[torch.randperm(values.numel(), generator=g)]
    signs = torch.randint(0, 2, (values.numel(),), generator=g) * 2 - 1
    return shuffled * signs


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int32) if t.dtype == torch.float32 else t.view(torch.int64)


@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.3, 0.5, 0.75, 1.0])
def test_per_layer_keeps_the_largest_fraction_of_each_tensor(fraction: float) -> None:
    # Magnitudes 1..n, so the k largest are exactly those with |v| > n - k.
    sizes = {"a": 100, "b": 40, "c": 7}
    tensors = {
        name: _signed_permutation(torch.arange(1.0, n + 1), seed=i).reshape(-1, 1)
        for i, (name, n) in enumerate(sizes.items())
    }
    out = parse([str(fraction)]).apply(SharedUpdate(tensors), GEN)
    for name, n in sizes.items():
        k = max(1, int(fraction * n + 0.5))
        before, after = tensors[name], out.tensors[name]
        assert after.shape == before.shape
        assert int((after != 0).sum()) == k
        large = before.abs() > n - k
        assert (after[~large] == 0).all()
        assert torch.equal(_bits(after[large]), _bits(before[large]))  # kept bit for bit


def test_global_ranks_all_tensors_together() -> None:
    # Every entry of "small" is smaller than every entry of "large".
    small = _signed_permutation(torch.arange(1.0, 51), seed=1).reshape(5, 10)
    large = _signed_permutation(torch.arange(51.0, 151), seed=2).reshape(10, 10)
    update = SharedUpdate({"small": small, "large": large})

    out = parse(["0.5", "global"]).apply(update, GEN)  # 75 of 150
    assert int((out.tensors["small"] != 0).sum()) == 0
    assert int((out.tensors["large"] != 0).sum()) == 75
    kept = large.abs() > 75
    assert (out.tensors["large"][~kept] == 0).all()
    assert torch.equal(out.tensors["large"][kept], large[kept])

    per_layer = parse(["0.5"]).apply(update, GEN)
    assert int((per_layer.tensors["small"] != 0).sum()) == 25
    assert int((per_layer.tensors["large"] != 0).sum()) == 50


@pytest.mark.parametrize("fraction", [0.001, 0.05, 0.3, 0.9])
def test_global_keeps_round_f_n_of_the_total(update: SharedUpdate, fraction: float) -> None:
    total = sum(t.numel() for t in update.tensors.values())
    everything = torch.cat([t.flatten() for t in update.tensors.values()])
    k = max(1, int(fraction * total + 0.5))
    threshold = everything.abs().sort(descending=True).values[k - 1]  # entries are distinct

    out = TopK(fraction, PruneScope.GLOBAL).apply(update, GEN)
    assert sum(int((t != 0).sum()) for t in out.tensors.values()) == k
    for name, before in update.tensors.items():
        after = out.tensors[name]
        large = before.abs() >= threshold
        assert (after[~large] == 0).all()
        assert torch.equal(_bits(after[large]), _bits(before[large]))


def test_rounds_half_up_and_keeps_at_least_one_per_tensor() -> None:
    tensors = {"a": torch.arange(1.0, 11), "b": torch.arange(1.0, 5), "c": torch.arange(1.0, 4)}
    out = TopK(0.25).apply(SharedUpdate(tensors), GEN)  # 2.5 -> 3, 1.0 -> 1, 0.75 -> 1
    assert torch.equal(out.tensors["a"], torch.tensor([0, 0, 0, 0, 0, 0, 0, 8, 9, 10.0]))
    assert torch.equal(out.tensors["b"], torch.tensor([0, 0, 0, 4.0]))
    assert torch.equal(out.tensors["c"], torch.tensor([0, 0, 3.0]))

    tiny = TopK(0.01).apply(SharedUpdate(tensors), GEN)  # 0.1, 0.04, 0.03 -> 1 each
    assert [int((t != 0).sum()) for t in tiny.tensors.values()] == [1, 1, 1]
    assert (
        TopK(1e-6, PruneScope.GLOBAL).apply(SharedUpdate(tensors), GEN).tensors["a"].count_nonzero()
        == 1
    )


def test_ties_are_broken_by_position() -> None:
    tied = torch.tensor([[-2.0, 2.0, 2.0, -2.0, 2.0], [2.0, -2.0, 2.0, 2.0, -2.0]])
    out = TopK(0.3).apply(SharedUpdate({"w": tied}), GEN)
    expected = torch.zeros_like(tied)
    expected[0, :3] = tied[0, :3]  # the earliest three
    assert torch.equal(out.tensors["w"], expected)

    a, b = torch.ones(3), torch.ones(3)
    out = TopK(0.5, PruneScope.GLOBAL).apply(SharedUpdate({"a": a, "b": b}), GEN)
    assert torch.equal(out.tensors["a"], torch.ones(3))
    assert torch.equal(out.tensors["b"], torch.zeros(3))

    many = torch.ones(5000) * torch.tensor([1.0, -1.0]).repeat(2500)  # equal magnitudes
    out = TopK(0.3).apply(SharedUpdate({"w": many}), GEN).tensors["w"]
    assert torch.equal(out[:1500], many[:1500])
    assert torch.equal(out[1500:], torch.zeros(3500))


def test_fraction_one_is_identity_and_dtype_and_shape_are_kept(update: SharedUpdate) -> None:
    doubled = SharedUpdate({k: v.double() for k, v in update.tensors.items()})
    for scope in PruneScope:
        out = TopK(1.0, scope).apply(doubled, GEN)
        for name, before in doubled.tensors.items():
            assert out.tensors[name].dtype == torch.float64
            assert torch.equal(_bits(out.tensors[name]), _bits(before))


def test_empty_tensors_and_updates() -> None:
    out = TopK(0.5).apply(SharedUpdate({"e": torch.zeros(0, 3), "w": torch.ones(2)}), GEN)
    assert out.tensors["e"].shape == (0, 3)
    assert torch.equal(out.tensors["w"], torch.tensor([1.0, 0.0]))
    assert TopK(0.5, PruneScope.GLOBAL).apply(SharedUpdate({}), GEN).tensors == {}


@pytest.mark.parametrize("scope", list(PruneScope))
def test_input_untouched_kind_and_metadata_kept(scope: PruneScope, update: SharedUpdate) -> None:
    before = {name: t.clone() for name, t in update.tensors.items()}
    out = TopK(0.2, scope).apply(update, GEN)
    for name, t in update.tensors.items():
        assert torch.equal(t, before[name])
    assert any(not torch.equal(out.tensors[n], t) for n, t in update.tensors.items())
    assert out.kind is UpdateKind.WEIGHT_DELTA
    assert out.metadata == {"num_samples": 8, "lr": 0.1}
    assert list(out.tensors) == list(update.tensors)


@pytest.mark.parametrize(
    ("args", "expected", "spec"),
    [
        (["0.1"], TopK(0.1), "topk:0.1"),
        (["0.1", "layer"], TopK(0.1, PruneScope.LAYER), "topk:0.1"),
        ([".1", " GLOBAL "], TopK(0.1, PruneScope.GLOBAL), "topk:0.1:global"),
        (["1"], TopK(1.0), "topk:1.0"),
        (["1e-3"], TopK(0.001), "topk:0.001"),
    ],
)
def test_parse_and_canonical_spelling(args: list[str], expected: TopK, spec: str) -> None:
    defense = parse(args)
    assert defense == expected
    assert defense.spec == spec
    assert parse(spec.split(":")[1:]) == defense


USAGE = "topk:FRACTION[:SCOPE] with FRACTION in (0, 1] and SCOPE one of layer (default), global"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["0"], "topk fraction must be in (0, 1], got 0.0"),
        (["-0.1"], "topk fraction must be in (0, 1], got -0.1"),
        (["1.5"], "topk fraction must be in (0, 1], got 1.5"),
        (["nan"], "topk fraction must be in (0, 1], got nan"),
        (["half"], "topk fraction must be in (0, 1], got 'half'"),
        (["0.1", "row"], "unknown topk scope 'row'; choose one of: layer, global"),
        ([], f"defense 'topk' takes 1 to 2 argument(s), got 0 in 'topk'; spell it {USAGE}"),
        (
            ["0.1", "global", "x"],
            f"defense 'topk' takes 1 to 2 argument(s), got 3 in 'topk:0.1:global:x'; "
            f"spell it {USAGE}",
        ),
    ],
)
def test_bad_spellings_give_one_line_errors(args: list[str], message: str) -> None:
    with pytest.raises(GradleakError) as info:
        parse(args)
    assert str(info.value) == message
    assert "\n" not in message
