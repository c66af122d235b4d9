"""DP-SGD against ground truth: per-sample clipping, the noise's scale, seeding, accounting."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from gradleak.core.batch import PrivateBatch
from gradleak.core.errors import GradleakError
from gradleak.core.update import SharedUpdate, UpdateKind
from gradleak.defenses import ClientView
from gradleak.defenses import dpsgd as dpsgd_module
from gradleak.defenses.accounting import dp_epsilon
from gradleak.defenses.dpsgd import DPSGD, parse
from gradleak.fl.fedsgd import FedSGDClient
from gradleak.models import build_model

pytest.importorskip("opacus")  # DP-SGD is an optional extra

IMAGE = (16, 16)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _client(
    name: str = "lenet", batch_size: int = 4, seed: int = 0
) -> tuple[FedSGDClient, PrivateBatch]:
    model = build_model(name, num_classes=10, image_size=IMAGE, seed=seed)
    g = _gen(seed + 100)
    batch = PrivateBatch(
        torch.randn(batch_size, 3, *IMAGE, generator=g),
        torch.randint(0, 10, (batch_size,), generator=g),
    )
    return FedSGDClient(model), batch


def _defend(
    defense: DPSGD, client: FedSGDClient, batch: PrivateBatch, seed: int = 0
) -> SharedUpdate:
    update = client.compute_update(batch)
    return defense.apply(update, _gen(seed), ClientView(client.model, batch))


def _per_sample_loop(client: FedSGDClient, batch: PrivateBatch) -> list[dict[str, torch.Tensor]]:
    """Each sample's gradient by its own autograd pass: independent of Opacus."""
    params = dict(client.model.named_parameters())
    grads = []
    for i in range(len(batch)):
        loss = F.cross_entropy(client.model(batch.images[i : i + 1]), batch.labels[i : i + 1])
        values = torch.autograd.grad(loss, list(params.values()))
        grads.append(dict(zip(params, values, strict=True)))
    return grads


def _norm(grads: dict[str, torch.Tensor]) -> float:
    return math.sqrt(sum(float(g.double().pow(2).sum()) for g in grads.values()))


def _flat(update: SharedUpdate) -> torch.Tensor:
    return torch.cat([t.flatten() for t in update.tensors.values()]).double()


def test_no_noise_and_no_clipping_is_the_fedsgd_update() -> None:
    client, batch = _client()
    plain = client.compute_update(batch)
    out = _defend(DPSGD(1e6, 0.0), client, batch)
    assert list(out.tensors) == list(plain.tensors)
    assert out.kind is plain.kind and out.metadata == plain.metadata
    for name, expected in plain.tensors.items():
        assert out.tensors[name].shape == expected.shape
        torch.testing.assert_close(out.tensors[name], expected, rtol=0, atol=1e-5)


def test_each_sample_is_clipped_to_the_norm_then_averaged() -> None:
    client, batch = _client(batch_size=6)
    per_sample = _per_sample_loop(client, batch)
    norms = sorted(_norm(g) for g in per_sample)
    clip = (norms[2] + norms[3]) / 2  # half the samples are clipped, half are not
    clipped = []
    for grads in per_sample:
        factor = min(1.0, clip / _norm(grads))
        clipped.append({name: g * factor for name, g in grads.items()})
        assert _norm(clipped[-1]) <= clip * (1 + 1e-6)
    out = _defend(DPSGD(clip, 0.0), client, batch)
    for name, tensor in out.tensors.items():
        expected = torch.stack([g[name] for g in clipped]).mean(dim=0)
        torch.testing.assert_close(tensor, expected, rtol=0, atol=1e-6)
    # Every per-sample gradient norm is bounded by C, so the mean is too.
    assert _norm(out.tensors) <= clip * (1 + 1e-6)


def test_noise_has_std_sigma_clip_over_batch_size() -> None:
    client, batch = _client("mlp-256", batch_size=4)  # about 265k entries
    clip, sigma = 0.5, 1.5
    noisy = _flat(_defend(DPSGD(clip, sigma), client, batch, seed=3))
    clean = _flat(_defend(DPSGD(clip, 0.0), client, batch, seed=3))
    delta = noisy - clean
    expected = sigma * clip / len(batch)
    assert delta.numel() > 200_000
    assert delta.std().item() == pytest.approx(expected, rel=0.02)
    assert abs(delta.mean().item()) < 5 * expected / math.sqrt(delta.numel())


def test_same_seed_same_output_other_seed_other_output() -> None:
    client, batch = _client()
    defense = DPSGD(1.0, 0.8)
    first, again, other = (_defend(defense, client, batch, seed=s) for s in (5, 5, 6))
    for name in first.tensors:
        assert torch.equal(first.tensors[name], again.tensors[name])
        assert not torch.equal(first.tensors[name], other.tensors[name])


def test_the_incoming_values_are_replaced_and_left_alone() -> None:
    client, batch = _client()
    real = client.compute_update(batch)
    garbage = SharedUpdate({name: torch.full_like(t, 7.0) for name, t in real.tensors.items()})
    view = ClientView(client.model, batch)
    defense = DPSGD(1.0, 0.3)
    from_real = defense.apply(real, _gen(1), view)
    from_garbage = defense.apply(garbage, _gen(1), view)
    for name in real.tensors:
        assert torch.equal(from_real.tensors[name], from_garbage.tensors[name])
        assert torch.equal(garbage.tensors[name], torch.full_like(real.tensors[name], 7.0))


def test_the_client_model_is_left_as_it_was() -> None:
    client, batch = _client()
    before = {name: p.detach().clone() for name, p in client.model.named_parameters()}
    _defend(DPSGD(1.0, 1.0), client, batch)
    for name, p in client.model.named_parameters():
        assert torch.equal(p, before[name])
        assert p.grad is None
        assert not hasattr(p, "grad_sample")


@pytest.mark.parametrize("name", ["convnet-4", "resnet20"])
def test_batchnorm_models_are_refused(name: str) -> None:
    client, batch = _client(name, batch_size=2)
    with pytest.raises(GradleakError) as info:
        _defend(DPSGD(1.0, 1.0), client, batch)
    message = str(info.value)
    assert message.startswith("DP-SGD needs a model without BatchNorm (lenet, mlp); ")
    assert "\n" not in message


class _ScaledLinear(nn.Module):
    """A trainable layer holding a buffer too: Opacus has no per-sample rule for it."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(10, 3 * IMAGE[0] * IMAGE[1]))
        self.register_buffer("scale", torch.tensor(0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x.flatten(1) @ self.weight.T


def test_a_layer_opacus_cannot_handle_is_one_line() -> None:
    _, batch = _client()
    client = FedSGDClient(_ScaledLinear())
    with pytest.raises(GradleakError) as info:
        _defend(DPSGD(1.0, 1.0), client, batch)
    message = str(info.value)
    assert message.startswith("DP-SGD cannot take per-sample gradients of _ScaledLinear: ")
    assert "\n" not in message


def test_needs_the_client() -> None:
    client, batch = _client()
    with pytest.raises(GradleakError) as info:
        DPSGD(1.0, 1.0).apply(client.compute_update(batch), _gen())
    assert str(info.value) == (
        "defense 'dpsgd:1.0:1.0' needs the client's model and batch; apply it on the client "
        "(apply_defenses(..., client=ClientView(model, batch)))"
    )


def test_refuses_updates_it_cannot_recompute() -> None:
    client, batch = _client()
    update = client.compute_update(batch)
    view = ClientView(client.model, batch)
    delta = SharedUpdate(update.tensors, UpdateKind.WEIGHT_DELTA)
    with pytest.raises(GradleakError, match="cannot replace a weight_delta update"):
        DPSGD(1.0, 1.0).apply(delta, _gen(), view)
    partial = SharedUpdate({"classifier.weight": update.tensors["classifier.weight"]})
    with pytest.raises(GradleakError, match="are not the client model's parameters"):
        DPSGD(1.0, 1.0).apply(partial, _gen(), view)


# --- accounting -------------------------------------------------------------------------------


def test_epsilon_falls_with_noise_and_grows_with_steps() -> None:
    by_sigma = [dp_epsilon(s, 0.01, 1000, 1e-5) for s in (0.6, 0.8, 1.0, 2.0, 4.0)]
    assert all(a > b for a, b in zip(by_sigma, by_sigma[1:], strict=False))
    by_steps = [dp_epsilon(1.0, 0.01, n, 1e-5) for n in (10, 100, 1000, 10_000)]
    assert all(a < b for a, b in zip(by_steps, by_steps[1:], strict=False))
    assert dp_epsilon(1.0, 0.01, 0, 1e-5) == 0.0
    assert dp_epsilon(0.0, 0.01, 10, 1e-5) == math.inf


@pytest.mark.parametrize(
    ("sigma", "rate", "steps", "delta"), [(1.1, 0.004, 300, 1e-5), (0.7, 0.05, 40, 1e-6)]
)
def test_epsilon_matches_opacus_stepped_directly(
    sigma: float, rate: float, steps: int, delta: float
) -> None:
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    for _ in range(steps):
        accountant.step(noise_multiplier=sigma, sample_rate=rate)
    assert dp_epsilon(sigma, rate, steps, delta) == pytest.approx(
        accountant.get_epsilon(delta), rel=1e-12
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((-1.0, 0.01, 10, 1e-5), "noise multiplier must be a finite number >= 0, got -1.0"),
        ((1.0, 0.0, 10, 1e-5), "sample rate must be in (0, 1], got 0.0"),
        ((1.0, 1.5, 10, 1e-5), "sample rate must be in (0, 1], got 1.5"),
        ((1.0, 0.01, -1, 1e-5), "steps must be a non-negative integer, got -1"),
        ((1.0, 0.01, 2.5, 1e-5), "steps must be a non-negative integer, got 2.5"),
        ((1.0, 0.01, 10, 1.0), "delta must be in (0, 1), got 1.0"),
    ],
)
def test_epsilon_rejects_bad_arguments(args: tuple, message: str) -> None:
    with pytest.raises(GradleakError) as info:
        dp_epsilon(*args)
    assert str(info.value) == message


# --- spelling ---------------------------------------------------------------------------------


def _parse(spec: str) -> DPSGD:
    """As the registry does: split on ':', strip, drop the name."""
    name, *args = (part.strip() for part in spec.strip().split(":"))
    assert name.lower() == dpsgd_module.NAME
    return parse(args)


def test_parse_and_canonical_spelling() -> None:
    defense = _parse(" dpsgd : 1 : 0.5 ")
    assert defense == DPSGD(1.0, 0.5)
    assert defense.spec == "dpsgd:1.0:0.5"
    assert _parse(defense.spec) == defense
    assert _parse("dpsgd:1e-1:0").spec == "dpsgd:0.1:0.0"


USAGE = dpsgd_module.USAGE
BAD_SPECS = [
    ("dpsgd", f"defense 'dpsgd' takes 2 argument(s), got 0 in 'dpsgd'; spell it {USAGE}"),
    ("dpsgd:1", f"defense 'dpsgd' takes 2 argument(s), got 1 in 'dpsgd:1'; spell it {USAGE}"),
    (
        "dpsgd:1:1:1",
        f"defense 'dpsgd' takes 2 argument(s), got 3 in 'dpsgd:1:1:1'; spell it {USAGE}",
    ),
    ("dpsgd:big:1", "dpsgd clipping norm must be a finite number > 0, got 'big'"),
    ("dpsgd:0:1", "dpsgd clipping norm must be a finite number > 0, got 0.0"),
    ("dpsgd:-1:1", "dpsgd clipping norm must be a finite number > 0, got -1.0"),
    ("dpsgd:inf:1", "dpsgd clipping norm must be a finite number > 0, got inf"),
    ("dpsgd:nan:1", "dpsgd clipping norm must be a finite number > 0, got nan"),
    ("dpsgd:1:", "dpsgd noise multiplier must be a finite number >= 0, got ''"),
    ("dpsgd:1:-0.5", "dpsgd noise multiplier must be a finite number >= 0, got -0.5"),
    ("dpsgd:1:inf", "dpsgd noise multiplier must be a finite number >= 0, got inf"),
    ("dpsgd:1:nan", "dpsgd noise multiplier must be a finite number >= 0, got nan"),
]


@pytest.mark.parametrize(("spec", "message"), BAD_SPECS)
def test_bad_spellings_give_one_line(spec: str, message: str) -> None:
    with pytest.raises(GradleakError) as info:
        _parse(spec)
    assert str(info.value) == message
    assert "\n" not in message
