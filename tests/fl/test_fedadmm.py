"""FedADMM client against the equations worked out by hand, and its server rounds."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gradleak.core import PrivateBatch, UpdateKind
from gradleak.core.errors import GradleakError
from gradleak.fl import FedADMMClient, FedSGDClient, LocalTraining, ProtocolSettings, simulate
from gradleak.models import build_model

pytestmark = pytest.mark.usefixtures("one_thread")


# --- A one-parameter problem solved by hand -------------------------------------------------
#
# nn.Linear(1, 2, bias=False) with weight (w, −w) on the input 1 with label 0 has logits
# (w, −w), so p₀ = 1 / (1 + e^(−2w)) and the cross-entropy gradient is (p₀ − 1, 1 − p₀)·1.
# Every ADMM step keeps the weight, the dual and the global model antisymmetric, so the whole
# round is a recursion on the first component alone.


def _scalar_model(w: float) -> nn.Linear:
    model = nn.Linear(1, 2, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[w], [-w]], dtype=torch.float64))
    return model


def _scalar_batch() -> PrivateBatch:
    return PrivateBatch(torch.ones(1, 1, dtype=torch.float64), torch.tensor([0]))


def _grad(w: float) -> float:
    """∂ cross-entropy / ∂ w₀ at weight (w, −w), input 1, label 0: p₀ − 1."""
    return 1.0 / (1.0 + math.exp(-2.0 * w)) - 1.0


def _round(
    x: float, pi: float, z: float, steps: int, eta: float, rho: float
) -> tuple[float, float, float]:
    """One client round written out: (x, π, Δ) after `steps` local steps against z."""
    shared_before = x + pi / rho
    for _ in range(steps):
        x = x - eta * (_grad(x) + pi + rho * (x - z))
    pi = pi + rho * (x - z)
    return x, pi, (x + pi / rho) - shared_before


def _first_components(client: FedADMMClient) -> tuple[float, float]:
    return float(client.model.weight.detach()[0, 0]), float(client.dual["weight"][0, 0])


def _assert_antisymmetric(tensor: torch.Tensor, first: float) -> None:
    expected = torch.tensor([[first], [-first]], dtype=torch.float64)
    torch.testing.assert_close(tensor, expected, rtol=1e-12, atol=1e-14)


def test_first_step_from_zero_matches_the_numbers_worked_by_hand() -> None:
    # w = 0: p₀ = 1/2, gradient −1/2. η = 0.1, ρ = 2:
    # x = 0 − 0.1·(−0.5) = 0.05; π = 2·(0.05 − 0) = 0.1; Δ = (0.05 + 0.1/2) − 0 = 0.1.
    client = FedADMMClient(_scalar_model(0.0), LocalTraining(lr=0.1, steps=1), rho=2.0)
    update = client.compute_update(_scalar_batch())
    assert update.kind is UpdateKind.ADMM_INCREMENT
    assert update.metadata["rho"] == 2.0 and update.num_samples == 1
    _assert_antisymmetric(client.model.weight.detach(), 0.05)
    _assert_antisymmetric(client.dual["weight"], 0.1)
    _assert_antisymmetric(update.tensors["weight"], 0.1)


def test_two_local_steps_follow_the_augmented_lagrangian() -> None:
    # Second step from x = 0.05 (π still 0 inside the round, z = 0):
    # x = 0.05 − 0.1·(g(0.05) + 0 + 2·0.05) with g(0.05) = σ(0.1) − 1.
    eta, rho = 0.1, 2.0
    g = 1.0 / (1.0 + math.exp(-0.1)) - 1.0
    x2 = 0.05 - eta * (g + rho * 0.05)
    pi = rho * x2
    client = FedADMMClient(_scalar_model(0.0), LocalTraining(lr=eta, steps=2), rho=rho)
    update = client.compute_update(_scalar_batch())
    _assert_antisymmetric(client.model.weight.detach(), x2)
    _assert_antisymmetric(client.dual["weight"], pi)
    _assert_antisymmetric(update.tensors["weight"], x2 + pi / rho)
    # In a first round π/ρ = x − z, so the increment is twice the FedAvg weight difference.
    assert x2 + pi / rho == pytest.approx(2 * x2, rel=1e-12)


@pytest.mark.parametrize(("steps", "eta", "rho"), [(1, 0.1, 2.0), (3, 0.05, 0.5)])
def test_second_round_keeps_x_and_the_nonzero_dual(steps: int, eta: float, rho: float) -> None:
    z1 = 0.3
    x1, pi1, delta1 = _round(z1, 0.0, z1, steps, eta, rho)
    z2 = z1 + delta1  # the server's step with one user
    x2, pi2, delta2 = _round(x1, pi1, z2, steps, eta, rho)
    assert pi1 != 0.0  # the second round really runs with a dual variable

    client = FedADMMClient(_scalar_model(z1), LocalTraining(lr=eta, steps=steps), rho=rho)
    first = client.compute_update(_scalar_batch())
    _assert_antisymmetric(first.tensors["weight"], delta1)
    assert _first_components(client) == pytest.approx((x1, pi1), rel=1e-12)

    second = client.compute_update(_scalar_batch(), _scalar_model(z2))
    _assert_antisymmetric(client.model.weight.detach(), x2)
    _assert_antisymmetric(client.dual["weight"], pi2)
    _assert_antisymmetric(second.tensors["weight"], delta2)


def test_second_round_of_one_step_with_one_user_cancels_the_penalty() -> None:
    # With z₂ = z₁ + Δ₁ = x₁ + π₁/ρ the terms π₁ + ρ(x₁ − z₂) cancel, so
    # x₂ = x₁ − η g(x₁), π₂ = −ρ η g(x₁) and Δ₂ = η g(z₁) − 2 η g(x₁).
    eta, rho, z1 = 0.1, 3.0, -0.2
    x1 = z1 - eta * _grad(z1)
    client = FedADMMClient(_scalar_model(z1), LocalTraining(lr=eta), rho=rho)
    first = client.compute_update(_scalar_batch())
    z2 = z1 + float(first.tensors["weight"][0, 0])
    second = client.compute_update(_scalar_batch(), _scalar_model(z2))
    assert _first_components(client) == pytest.approx(
        (x1 - eta * _grad(x1), -rho * eta * _grad(x1)), rel=1e-10
    )
    _assert_antisymmetric(second.tensors["weight"], eta * _grad(z1) - 2 * eta * _grad(x1))


# --- Two samples, two classes, a bias: the softmax gradient in closed form -----------------


def _softmax_ce_grads(
    weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor, label: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy of one sample by hand: r = softmax(Wx + b) − onehot; (r xᵀ, r)."""
    logits = weight @ x + bias
    p = torch.exp(logits - logits.max())
    r = p / p.sum()
    r[label] -= 1.0
    return torch.outer(r, x), r


def test_softmax_gradient_by_hand_at_zero() -> None:
    # Zero weights: p = (1/2, 1/2); label 0, x = (1, 2): r = (−1/2, 1/2).
    gw, gb = _softmax_ce_grads(
        torch.zeros(2, 2, dtype=torch.float64),
        torch.zeros(2, dtype=torch.float64),
        torch.tensor([1.0, 2.0], dtype=torch.float64),
        0,
    )
    torch.testing.assert_close(gw, torch.tensor([[-0.5, -1.0], [0.5, 1.0]], dtype=torch.float64))
    torch.testing.assert_close(gb, torch.tensor([-0.5, 0.5], dtype=torch.float64))


def test_local_steps_take_one_sample_each_in_order() -> None:
    eta, rho = 0.2, 0.5
    weight = torch.tensor([[0.3, -0.1], [0.2, 0.4]], dtype=torch.float64)
    bias = torch.tensor([0.05, -0.05], dtype=torch.float64)
    images = torch.tensor([[1.0, 2.0], [-1.0, 0.5]], dtype=torch.float64)
    labels = torch.tensor([0, 1])
    model = nn.Linear(2, 2).double()
    with torch.no_grad():
        model.weight.copy_(weight)
        model.bias.copy_(bias)

    # Reference: step 1 on sample 0, step 2 on sample 1, from x = z, π = 0.
    z = {"weight": weight.clone(), "bias": bias.clone()}
    x = {k: v.clone() for k, v in z.items()}
    for i in (0, 1):
        gw, gb = _softmax_ce_grads(x["weight"], x["bias"], images[i], int(labels[i]))
        for name, g in (("weight", gw), ("bias", gb)):
            x[name] = x[name] - eta * (g + 0.0 + rho * (x[name] - z[name]))
    pi = {k: rho * (x[k] - z[k]) for k in x}
    delta = {k: x[k] + pi[k] / rho - z[k] for k in x}

    client = FedADMMClient(model, LocalTraining(lr=eta, steps=2, batch_size=1), rho=rho)
    update = client.compute_update(PrivateBatch(images, labels))
    for name, p in client.model.named_parameters():
        torch.testing.assert_close(p.detach(), x[name], rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(client.dual[name], pi[name], rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(update.tensors[name], delta[name], rtol=1e-12, atol=1e-14)


# --- LeNet, the protocol's server rounds and bad input --------------------------------------


def _image_batch(size: int) -> PrivateBatch:
    g = torch.Generator().manual_seed(7)
    return PrivateBatch(torch.randn(size, 3, 32, 32, generator=g), torch.arange(size) % 10)


def test_first_round_of_one_step_shares_minus_two_lr_times_the_gradient() -> None:
    model = build_model("lenet", num_classes=10, seed=1).double()
    batch = PrivateBatch(_image_batch(2).images.double(), _image_batch(2).labels)
    lr = 0.01
    gradient = FedSGDClient(model).compute_update(batch)
    update = FedADMMClient(model, LocalTraining(lr=lr), rho=0.7).compute_update(batch)
    assert set(update.tensors) == set(gradient.tensors)
    for name, g in gradient.tensors.items():
        torch.testing.assert_close(update.tensors[name], -2 * lr * g, rtol=1e-10, atol=1e-15)


def test_simulate_moves_the_server_by_the_first_round_mean_increment() -> None:
    model = build_model("lenet", num_classes=10, seed=4)
    batch = _image_batch(2)
    settings = dict(name="fedadmm", local=LocalTraining(lr=0.05, steps=2), users=2, rho=1.5)
    first = simulate(model, batch, ProtocolSettings(**settings, rounds=1))  # type: ignore[arg-type]
    second = simulate(model, batch, ProtocolSettings(**settings, rounds=2))  # type: ignore[arg-type]
    before = dict(model.named_parameters())
    for name, p in second.server_model.named_parameters():
        expected = before[name].detach() + first.update.tensors[name]
        torch.testing.assert_close(p.detach(), expected, rtol=1e-6, atol=1e-7)
    # The first round's server model is the untouched original.
    for name, p in first.server_model.named_parameters():
        torch.testing.assert_close(p.detach(), before[name].detach(), rtol=0, atol=0)

    # Round 2's update is what the same clients share against the moved model.
    clients = [FedADMMClient(model, LocalTraining(lr=0.05, steps=2), rho=1.5) for _ in range(2)]
    halves = [PrivateBatch(batch.images[i : i + 1], batch.labels[i : i + 1]) for i in (0, 1)]
    for client, half in zip(clients, halves, strict=True):
        client.compute_update(half)
    again = [c.compute_update(h, second.server_model) for c, h in zip(clients, halves, strict=True)]
    for name, shared in second.update.tensors.items():
        mean = (again[0].tensors[name] + again[1].tensors[name]) / 2
        torch.testing.assert_close(shared, mean, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("rho", [0.0, -1.0, math.nan, math.inf])
def test_bad_rho_is_a_one_line_error(rho: float) -> None:
    model = _scalar_model(0.0)
    with pytest.raises(GradleakError, match="ADMM penalty rho must be positive"):
        FedADMMClient(model, LocalTraining(lr=0.1), rho=rho)
    with pytest.raises(GradleakError, match="ADMM penalty rho must be positive"):
        simulate(
            model, _scalar_batch(), ProtocolSettings("fedadmm", LocalTraining(lr=0.1), rho=rho)
        )
