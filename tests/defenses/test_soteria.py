"""Soteria against ground truth: which classifier columns it zeroes, and nothing else."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gradleak.core.batch import PrivateBatch
from gradleak.core.errors import GradleakError
from gradleak.core.update import SharedUpdate, UpdateKind
from gradleak.defenses import ClientView
from gradleak.defenses import soteria as soteria_module
from gradleak.defenses.soteria import Soteria, parse
from gradleak.fl.fedsgd import FedSGDClient
from gradleak.models import build_model

GEN = torch.Generator().manual_seed(0)  # Soteria draws nothing; the interface takes one


class Tiny(nn.Module):
    """A 2-channel stride-2 conv and a sigmoid: 8 representation features from 1×6×6."""

    def __init__(self, activation: nn.Module | None = None) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 2, 3, stride=2), activation or nn.Sigmoid())
        self.classifier = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def _tiny_case(seed: int = 0, batch_size: int = 3) -> tuple[FedSGDClient, PrivateBatch]:
    torch.manual_seed(seed)
    model = Tiny().double()
    g = torch.Generator().manual_seed(seed + 1)
    images = torch.randn(batch_size, 1, 6, 6, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 3, (batch_size,), generator=g)
    return FedSGDClient(model), PrivateBatch(images, labels)


def _independent_scores(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Σ_b ‖∂r_{b,i}/∂x_b‖ / |r_{b,i}|, one sample and one feature at a time."""
    scores = torch.zeros(8, dtype=torch.float64)
    for b in range(images.shape[0]):
        for i in range(8):
            x = images[b : b + 1].clone().requires_grad_(True)
            r = torch.flatten(model.features(x), 1)[0, i]
            (dx,) = torch.autograd.grad(r, x)
            scores[i] += dx.norm() / r.abs()
    return scores


def _zero_columns(weight: torch.Tensor) -> set[int]:
    return {int(i) for i in torch.nonzero((weight == 0).all(dim=0)).flatten()}


@pytest.mark.parametrize(("percent", "count"), [(10, 1), (25, 2), (50, 4), (62.5, 5), (80, 6)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_zeroes_the_columns_of_the_smallest_ratios(percent: float, count: int, seed: int) -> None:
    client, batch = _tiny_case(seed)
    update = client.compute_update(batch)
    scores = _independent_scores(client.model, batch.images)
    ranked = scores.sort().values
    assert ranked[count] - ranked[count - 1] > 1e-6 * ranked[count]  # no near-tie at the cut
    expected = {int(i) for i in torch.argsort(scores)[:count]}

    out = Soteria(percent).apply(update, GEN, ClientView(client.model, batch))
    weight, before = out.tensors["classifier.weight"], update.tensors["classifier.weight"]
    assert _zero_columns(before) == set()
    assert _zero_columns(weight) == expected
    kept = sorted(set(range(8)) - expected)
    assert torch.equal(weight[:, kept], before[:, kept])
    for name, tensor in update.tensors.items():
        if name != "classifier.weight":
            assert torch.equal(out.tensors[name], tensor)
    assert out.kind is update.kind and out.metadata == update.metadata


def test_the_scores_match_the_independent_computation() -> None:
    client, batch = _tiny_case(4)
    scores = soteria_module.feature_scores(client.model, batch.images)
    expected = _independent_scores(client.model, batch.images)
    torch.testing.assert_close(scores, expected, rtol=1e-10, atol=0)


@pytest.mark.parametrize("percent", [5, 30, 50, 99])
def test_lenet_loses_exactly_the_asked_share_of_columns(percent: float) -> None:
    model = build_model("lenet", num_classes=10, image_size=(16, 16))  # 192 features
    client = FedSGDClient(model)
    g = torch.Generator().manual_seed(7)
    batch = PrivateBatch(torch.randn(2, 3, 16, 16, generator=g), torch.tensor([3, 8]))
    update = client.compute_update(batch)
    out = Soteria(percent).apply(update, GEN, ClientView(client.model, batch))
    count = int(percent * 192 / 100 + 0.5)
    weight, before = out.tensors["classifier.weight"], update.tensors["classifier.weight"]
    zeroed = _zero_columns(weight)
    assert len(zeroed) == count
    kept = sorted(set(range(192)) - zeroed)
    assert torch.equal(weight[:, kept], before[:, kept])
    for name, tensor in update.tensors.items():
        if name != "classifier.weight":
            assert torch.equal(out.tensors[name], tensor)


def test_dead_features_score_zero_and_go_first() -> None:
    client, batch = _tiny_case(3)
    client.model.features[1] = nn.ReLU()
    with torch.no_grad():
        conv = client.model.features[0]
        conv.weight[1] = 0.0
        conv.bias[1] = -1.0  # channel 1 (features 4..7) is 0 with a zero derivative
        conv.bias[0] = 10.0  # channel 0 (features 0..3) is positive everywhere
    scores = soteria_module.feature_scores(client.model, batch.images)
    assert torch.equal(scores[4:], torch.zeros(4, dtype=torch.float64))
    assert (scores[:4] > 0).all()
    update = client.compute_update(batch)
    out = Soteria(50).apply(update, GEN, ClientView(client.model, batch))
    assert torch.equal(out.tensors["classifier.weight"], update.tensors["classifier.weight"])


def test_zero_percent_changes_nothing() -> None:
    client, batch = _tiny_case()
    update = client.compute_update(batch)
    out = Soteria(0).apply(update, GEN, ClientView(client.model, batch))
    for name, tensor in update.tensors.items():
        assert torch.equal(out.tensors[name], tensor)


def test_the_client_model_is_left_as_it_was() -> None:
    model = build_model("resnet20", num_classes=10, image_size=(16, 16))  # train-mode BatchNorm
    client = FedSGDClient(model)
    g = torch.Generator().manual_seed(1)
    batch = PrivateBatch(torch.randn(2, 3, 16, 16, generator=g), torch.tensor([0, 1]))
    update = client.compute_update(batch)
    state = {k: v.clone() for k, v in client.model.state_dict().items()}
    out = Soteria(25).apply(update, GEN, ClientView(client.model, batch))
    assert len(_zero_columns(out.tensors["classifier.weight"])) == 16
    for key, value in client.model.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert all(p.grad is None for p in client.model.parameters())


def test_needs_the_client() -> None:
    client, batch = _tiny_case()
    with pytest.raises(GradleakError) as info:
        Soteria(40).apply(client.compute_update(batch), GEN)
    assert str(info.value) == (
        "defense 'soteria:40.0' needs the client's model and batch; apply it on the client "
        "(apply_defenses(..., client=ClientView(model, batch)))"
    )


def test_needs_the_classifier_weight_in_the_update() -> None:
    client, batch = _tiny_case()
    update = client.compute_update(batch)
    partial = SharedUpdate(
        {"classifier.bias": update.tensors["classifier.bias"]}, UpdateKind.GRADIENT
    )
    with pytest.raises(GradleakError) as info:
        Soteria(40).apply(partial, GEN, ClientView(client.model, batch))
    assert str(info.value).startswith(
        "defense 'soteria:40.0' needs the update's 'classifier.weight' tensor of shape (3, 8)"
    )


# --- spelling ---------------------------------------------------------------------------------


def _parse(spec: str) -> Soteria:
    """As the registry does: split on ':', strip, drop the name."""
    name, *args = (part.strip() for part in spec.strip().split(":"))
    assert name.lower() == soteria_module.NAME
    return parse(args)


def test_parse_and_canonical_spelling() -> None:
    defense = _parse(" Soteria : 60 ")
    assert defense == Soteria(60.0)
    assert defense.spec == "soteria:60.0"
    assert _parse(defense.spec) == defense
    assert _parse("soteria:0").spec == "soteria:0.0"


USAGE = soteria_module.USAGE
BAD_SPECS = [
    ("soteria", f"defense 'soteria' takes 1 argument(s), got 0 in 'soteria'; spell it {USAGE}"),
    (
        "soteria:1:2",
        f"defense 'soteria' takes 1 argument(s), got 2 in 'soteria:1:2'; spell it {USAGE}",
    ),
    ("soteria:100", "soteria percent must be in [0, 100), got 100.0"),
    ("soteria:-1", "soteria percent must be in [0, 100), got -1.0"),
    ("soteria:nan", "soteria percent must be in [0, 100), got nan"),
    ("soteria:inf", "soteria percent must be in [0, 100), got inf"),
    ("soteria:most", "soteria percent must be in [0, 100), got 'most'"),
    ("soteria:", "soteria percent must be in [0, 100), got ''"),
]


@pytest.mark.parametrize(("spec", "message"), BAD_SPECS)
def test_bad_spellings_give_one_line(spec: str, message: str) -> None:
    with pytest.raises(GradleakError) as info:
        _parse(spec)
    assert str(info.value) == message
    assert "\n" not in message
