"""Additive noise: its variance, mean and shape (Gaussian vs Laplacian), and its seeding."""

from __future__ import annotations

import math

import pytest
import torch

from gradleak.core.update import SharedUpdate
from gradleak.defenses import AdditiveNoise, NoiseKind, parse_defense

N = 1_000_000
KURTOSIS = {NoiseKind.GAUSSIAN: 3.0, NoiseKind.LAPLACIAN: 6.0}


def _zeros_update() -> SharedUpdate:
    """N zero entries over tensors of several shapes, so the output is the noise itself."""
    return SharedUpdate(
        {"w1": torch.zeros(500, 1000), "b1": torch.zeros(1000), "w2": torch.zeros(499, 1000)}
    )


def _flat(update: SharedUpdate) -> torch.Tensor:
    return torch.cat([t.flatten() for t in update.tensors.values()]).double()


def _noise(spec: str, seed: int) -> torch.Tensor:
    out = parse_defense(spec).apply(_zeros_update(), torch.Generator().manual_seed(seed))
    return _flat(out)


@pytest.mark.parametrize("kind", list(NoiseKind))
@pytest.mark.parametrize("variance", [1e-4, 1e-2, 1e-1])
def test_noise_has_the_requested_variance_and_zero_mean(kind: NoiseKind, variance: float) -> None:
    x = _noise(f"noise:{kind.value}:{variance}", seed=7)
    assert x.numel() == N
    assert x.var().item() == pytest.approx(variance, rel=0.03)
    assert abs(x.mean().item()) < 5 * math.sqrt(variance / N)


@pytest.mark.parametrize("kind", list(NoiseKind))
def test_noise_shape_gaussian_vs_laplacian(kind: NoiseKind) -> None:
    x = _noise(f"noise:{kind.value}:1e-2", seed=3)
    z = (x - x.mean()) / x.std()
    assert (z**4).mean().item() == pytest.approx(KURTOSIS[kind], abs=0.4)


def test_noise_is_added_to_the_update_not_substituted(update: SharedUpdate) -> None:
    big = SharedUpdate({"w": torch.linspace(-3, 3, N)}, update.kind, update.metadata)
    out = AdditiveNoise(NoiseKind.GAUSSIAN, 1e-2).apply(big, torch.Generator().manual_seed(1))
    delta = (out.tensors["w"] - big.tensors["w"]).double()
    assert delta.var().item() == pytest.approx(1e-2, rel=0.03)
    assert abs(delta.mean().item()) < 5 * math.sqrt(1e-2 / N)


@pytest.mark.parametrize("kind", list(NoiseKind))
def test_same_seed_same_noise_other_seed_other_noise(kind: NoiseKind, update: SharedUpdate) -> None:
    defense = AdditiveNoise(kind, 1e-3)

    def run(seed: int) -> SharedUpdate:
        return defense.apply(update, torch.Generator().manual_seed(seed))

    first, again, other = run(5), run(5), run(6)
    for name in update.tensors:
        assert torch.equal(first.tensors[name], again.tensors[name])
        assert not torch.equal(first.tensors[name], other.tensors[name])
        assert not torch.equal(first.tensors[name], update.tensors[name])


def test_each_tensor_gets_its_own_noise() -> None:
    twins = SharedUpdate({"a": torch.zeros(10_000), "b": torch.zeros(10_000)})
    out = AdditiveNoise(NoiseKind.LAPLACIAN, 1.0).apply(twins, torch.Generator().manual_seed(0))
    a, b = out.tensors["a"].double(), out.tensors["b"].double()
    correlation = ((a - a.mean()) * (b - b.mean())).mean() / (a.std() * b.std())
    assert abs(correlation.item()) < 0.05


def test_zero_variance_changes_nothing(update: SharedUpdate) -> None:
    out = parse_defense("noise:gaussian:0").apply(update, torch.Generator().manual_seed(0))
    for name, before in update.tensors.items():
        assert torch.equal(out.tensors[name], before)


def test_noise_keeps_dtype() -> None:
    update = SharedUpdate({"w": torch.zeros(1000, dtype=torch.float64)})
    out = parse_defense("noise:laplacian:1e-2").apply(update, torch.Generator().manual_seed(0))
    assert out.tensors["w"].dtype == torch.float64
