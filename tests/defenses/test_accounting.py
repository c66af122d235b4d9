"""The privacy a run spends: published (ε, δ) values, and mechanisms that share a batch."""

from __future__ import annotations

import math

import pytest

from gradleak.core.errors import GradleakError
from gradleak.defenses import dp_mechanisms, parse_defenses
from gradleak.defenses.accounting import (
    GaussianMechanism,
    dp_epsilon,
    joint_noise_multiplier,
    privacy_spent,
)

pytest.importorskip("opacus")  # the accountant is Opacus's


def _composed(history: list[tuple[float, float, int]], delta: float) -> float:
    """ε of the accountant's composition of separately sampled (σ, q, steps) entries."""
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    accountant.history = list(history)
    return float(accountant.get_epsilon(delta=delta))


@pytest.mark.parametrize(
    ("n", "batch_size", "sigma", "epochs", "delta", "published"),
    [
        (60000, 150, 1.3, 15, 1e-5, 0.7242234026109595),
        (100000, 100, 1.0, 30, 1e-7, 1.4154988495444842),
    ],
)
def test_epsilon_reproduces_tf_privacy_published_values(
    n: int, batch_size: int, sigma: float, epochs: int, delta: float, published: float
) -> None:
    """TF-Privacy's RDP accountant on DP-SGD with Poisson sampling, q = B/N, ⌈E·N/B⌉ steps.

    Source: tensorflow/privacy, tensorflow_privacy/privacy/analysis/
    compute_dp_sgd_privacy_test.py, `test_compute_dp_sgd_privacy` cases 'Test0' (N = 60000,
    B = 150, σ = 1.3, 15 epochs, δ = 1e-5: ε = 0.7242234026109595, order 19) and 'Test1'
    (N = 100000, B = 100, σ = 1.0, 30 epochs, δ = 1e-7: ε = 1.4154988495444842, order 13),
    checked there with assertAlmostEqual, i.e. to 7 decimal places: https://github.com/
    tensorflow/privacy/blob/2cd46dbb995dfee13162f4e4a7b40c1940c9c6f0/tensorflow_privacy/
    privacy/analysis/compute_dp_sgd_privacy_test.py. Test0 is MNIST's 60000 images in
    batches sampled with q = 0.0025, over 6000 steps.
    """
    q = batch_size / n
    steps = math.ceil(epochs * n / batch_size)
    assert round(dp_epsilon(sigma, q, steps, delta) - published, 7) == 0


def test_one_batch_of_mechanisms_is_one_gaussian_mechanism() -> None:
    # (σ1⁻² + σ2⁻²)^(-1/2): two σ = 1 releases are one of σ = 1/√2; σ = 0 releases all.
    pair = [GaussianMechanism(1.0), GaussianMechanism(1.0)]
    assert joint_noise_multiplier(pair) == pytest.approx(2**-0.5, rel=1e-15)
    assert joint_noise_multiplier([GaussianMechanism(0.6)]) == 0.6
    assert joint_noise_multiplier([GaussianMechanism(3.0), GaussianMechanism(4.0)]) == (
        pytest.approx(12 / 5, rel=1e-15)
    )
    assert joint_noise_multiplier([GaussianMechanism(1.0), GaussianMechanism(0.0)]) == 0.0
    with pytest.raises(GradleakError, match="at least one DP mechanism"):
        joint_noise_multiplier([])


@pytest.mark.parametrize(("sigmas", "steps"), [((1.0, 2.0), 50), ((0.8, 0.8), 10)])
def test_two_dpsgd_mechanisms_per_step_compose_without_sampling(
    sigmas: tuple[float, float], steps: int
) -> None:
    # Without subsampling (q = 1) each step is two Gaussian mechanisms on the same data,
    # whose Rényi divergences add: the accountant's composition of the two is exact.
    mechanisms = dp_mechanisms(parse_defenses([f"dpsgd:1:{sigmas[0]}"]))
    mechanisms += dp_mechanisms(parse_defenses([f"dpsgd:0.5:{sigmas[1]}"]))
    composed = _composed([(sigmas[0], 1.0, steps), (sigmas[1], 1.0, steps)], 1e-5)
    assert privacy_spent(mechanisms, 1.0, steps, 1e-5) == pytest.approx(composed, rel=1e-9)


@pytest.mark.parametrize(("q", "steps"), [(0.01, 1000), (0.05, 500), (0.004, 10_000)])
def test_two_dpsgd_mechanisms_on_one_sampled_batch_are_not_separately_sampled(
    q: float, steps: int
) -> None:
    # Both mechanisms see the same Poisson batch, so the step is one sampled Gaussian
    # mechanism of the joint σ. Entering them as two separately sampled mechanisms would
    # claim more privacy than the step gives.
    mechanisms = [GaussianMechanism(1.0), GaussianMechanism(1.5)]
    joint = joint_noise_multiplier(mechanisms)
    spent = privacy_spent(mechanisms, q, steps, 1e-5)
    assert spent == pytest.approx(dp_epsilon(joint, q, steps, 1e-5), rel=1e-12)
    assert spent > _composed([(1.0, q, steps), (1.5, q, steps)], 1e-5)
    assert spent > dp_epsilon(1.0, q, steps, 1e-5)  # more than the less noisy one alone


def test_what_a_chain_spends() -> None:
    chain = parse_defenses(["dpsgd:1:1.1", "prune:0.5", "noise:gaussian:1e-2"])
    assert dp_mechanisms(chain) == [GaussianMechanism(1.1)]
    assert privacy_spent(dp_mechanisms(chain), 0.004, 300, 1e-5) == dp_epsilon(
        1.1, 0.004, 300, 1e-5
    )
    # Defenses without a clipping bound state no guarantee at all.
    assert dp_mechanisms(parse_defenses(["noise:gaussian:1", "precision:int8"])) == []
    assert privacy_spent([], 0.004, 300, 1e-5) is None
    assert privacy_spent([GaussianMechanism(0.0)], 0.004, 300, 1e-5) == math.inf


def test_a_mechanism_needs_a_finite_noise_multiplier() -> None:
    for sigma in (-1.0, math.inf, math.nan):
        with pytest.raises(GradleakError, match="noise multiplier must be a finite number >= 0"):
            GaussianMechanism(sigma)
