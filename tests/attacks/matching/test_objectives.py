"""Gradient distances and the total-variation prior against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from gradleak.attacks.matching.objectives import (
    OBJECTIVES,
    cosine_distance,
    get_objective,
    l2_distance,
)
from gradleak.core.errors import GradleakError
from gradleak.modalities.image import total_variation


def _grads(a: list[float], b: list[list[float]]) -> dict[str, torch.Tensor]:
    return {"layer.bias": torch.tensor(a), "layer.weight": torch.tensor(b)}


def test_l2_is_the_sum_of_squared_differences() -> None:
    candidate = _grads([1.0, 2.0], [[0.0, 1.0], [3.0, -1.0]])
    target = _grads([0.0, 4.0], [[1.0, 1.0], [1.0, 1.0]])
    # (1-0)² + (2-4)² + (0-1)² + (1-1)² + (3-1)² + (-1-1)² = 1 + 4 + 1 + 0 + 4 + 4
    assert l2_distance(candidate, target).item() == pytest.approx(14.0)
    assert l2_distance(target, target).item() == 0.0


def test_l2_only_compares_the_target_names() -> None:
    candidate = {**_grads([1.0, 0.0], [[0.0]]), "extra": torch.tensor([100.0])}
    target = _grads([0.0, 0.0], [[2.0]])
    assert l2_distance(candidate, target).item() == pytest.approx(1.0 + 4.0)


def test_cosine_of_hand_computed_vectors() -> None:
    candidate = _grads([1.0, 0.0], [[0.0]])
    target = _grads([1.0, 1.0], [[0.0]])
    # cos((1, 0, 0), (1, 1, 0)) = 1/√2
    expected = 1.0 - 1.0 / math.sqrt(2.0)
    assert cosine_distance(candidate, target).item() == pytest.approx(expected, abs=1e-6)


def test_cosine_treats_all_tensors_as_one_vector() -> None:
    # Per tensor these are orthogonal and parallel; as one vector (1, 0, 1, 1)·(0, 1, 1, 1) = 2,
    # norms √3 and √3: cosine 2/3.
    candidate = {"a": torch.tensor([1.0, 0.0]), "b": torch.tensor([1.0, 1.0])}
    target = {"a": torch.tensor([0.0, 1.0]), "b": torch.tensor([1.0, 1.0])}
    assert cosine_distance(candidate, target).item() == pytest.approx(1.0 - 2.0 / 3.0, abs=1e-6)


def test_cosine_identical_opposite_and_scaled() -> None:
    g = torch.Generator().manual_seed(0)
    target = {"w": torch.randn(4, 5, generator=g), "b": torch.randn(5, generator=g)}
    opposite = {n: -t for n, t in target.items()}
    scaled = {n: 3.5 * t for n, t in target.items()}
    assert cosine_distance(target, target).item() == pytest.approx(0.0, abs=1e-6)
    assert cosine_distance(opposite, target).item() == pytest.approx(2.0, abs=1e-6)
    assert cosine_distance(scaled, target).item() == pytest.approx(0.0, abs=1e-6)
    # ... while L2 does see the scale.
    assert l2_distance(scaled, target).item() > 1.0


def test_cosine_of_zero_candidate_is_finite() -> None:
    target = {"w": torch.tensor([1.0, 2.0])}
    assert cosine_distance({"w": torch.zeros(2)}, target).item() == pytest.approx(1.0)


def test_cosine_of_zero_candidate_is_differentiable() -> None:
    target = {"w": torch.tensor([1.0, 2.0])}
    candidate = {"w": torch.zeros(2, requires_grad=True)}
    cosine_distance(candidate, target).backward()
    assert torch.isfinite(candidate["w"].grad).all()


def test_get_objective() -> None:
    assert set(OBJECTIVES) == {"l2", "cosine", "tag"}
    assert get_objective("l2") is l2_distance
    assert get_objective("cosine") is cosine_distance
    with pytest.raises(
        GradleakError, match="unknown objective 'l1'; choose one of: l2, cosine, tag"
    ):
        get_objective("l1")


def test_total_variation_of_a_known_image() -> None:
    image = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])  # 1×1×2×2
    # horizontal |1-0|, |3-2| → mean 1; vertical |2-0|, |3-1| → mean 2
    assert total_variation(image).item() == pytest.approx(3.0)


def test_total_variation_averages_over_batch_and_channels() -> None:
    image = torch.zeros(2, 3, 3, 4)
    image[1, 2, :, 2:] = 1.0  # one vertical edge in one channel of one image
    # Horizontal pairs per row: 3; edges: 3 rows of 1 → 3 of 2·3·3·3 = 54 pairs.
    # No vertical change.
    assert total_variation(image).item() == pytest.approx(3 / 54)
    constant = torch.full((1, 3, 5, 5), 0.7)
    assert total_variation(constant).item() == 0.0
