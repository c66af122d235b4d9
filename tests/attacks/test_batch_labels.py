"""Batch label strategies (sign, yin, count) on constructed batches whose labels are known."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from gradleak.attacks.labels import (
    LABEL_STRATEGIES,
    count_labels,
    counts_from_bias,
    mean_softmax_estimate,
    sign_labels,
    yin_labels,
)
from gradleak.core import PrivateBatch, SharedUpdate, UpdateKind
from gradleak.core.errors import GradleakError
from gradleak.core.knowledge import Knowledge
from gradleak.data import get_dataset_spec, load_dataset, normalize, stack
from gradleak.fl import FedSGDClient
from gradleak.models import build_model

pytestmark = pytest.mark.usefixtures("one_thread")

SPEC = get_dataset_spec("cifar10")


def _knowledge(batch_size: int) -> Knowledge:
    return Knowledge(
        data_shape=(3, 32, 32),
        num_classes=10,
        batch_size=batch_size,
        mean=SPEC.mean,
        std=SPEC.std,
    )


def _cifar_batch(root: Path, classes: list[int]) -> PrivateBatch:
    """The k-th test image of each listed class, in order (repeats take later images)."""
    source = load_dataset("cifar10", root, "test")
    seen: dict[int, int] = {}
    indices = []
    for c in classes:
        indices.append(int((source.labels == c).nonzero()[seen.get(c, 0)]))
        seen[c] = seen.get(c, 0) + 1
    images, labels = stack(source, indices)
    assert labels.tolist() == classes
    return PrivateBatch(normalize(images, SPEC.mean, SPEC.std), labels)


def _batch_mean_softmax(model: nn.Module, batch: PrivateBatch) -> torch.Tensor:
    probe = copy.deepcopy(model).train()
    with torch.no_grad():
        return probe(batch.images).softmax(dim=1).mean(dim=0)


def test_new_strategies_are_registered_and_need_no_granted_knowledge() -> None:
    for name in ("sign", "yin", "count"):
        assert LABEL_STRATEGIES[name].requires == frozenset()
        assert LABEL_STRATEGIES[name].recovers


def test_sign_and_yin_recover_eight_distinct_labels(shared_data: Path) -> None:
    # Untrained LeNet puts most of its softmax on classes 3 and 5; for the other classes the
    # batch's mean softmax is below 1/8, so each present class has a negative bias gradient.
    classes = [0, 1, 2, 4, 6, 7, 8, 9]
    model = build_model("lenet", num_classes=10, seed=0)
    batch = _cifar_batch(shared_data, classes)
    assert (_batch_mean_softmax(model, batch)[classes] < 1 / 8).all()  # the premise
    update = FedSGDClient(model).compute_update(batch)
    knowledge = _knowledge(8)
    assert sign_labels(update, model, knowledge).tolist() == classes
    assert yin_labels(update, model, knowledge).tolist() == classes


def test_count_recovers_a_repeated_multiset_on_untrained_resnet(shared_data: Path) -> None:
    # Untrained ResNet-20 answers random probes as it answers the batch (mean softmax within
    # 0.005 per class), so B·(p̄ − g) is within 0.1 of each true count and rounds to it.
    classes = [0, 0, 0, 1, 1, 2, 3, 3, 3, 3, 5, 7, 7, 8, 9, 9]
    model = build_model("resnet20", num_classes=10, seed=0)
    batch = _cifar_batch(shared_data, classes)
    knowledge = _knowledge(16)
    error = mean_softmax_estimate(model, knowledge) - _batch_mean_softmax(model, batch).double()
    assert error.abs().max() * 16 < 0.5  # the premise: every count rounds to the truth
    update = FedSGDClient(model).compute_update(batch)
    assert count_labels(update, model, knowledge).tolist() == classes


def _hand_update(model: nn.Module, bias_grad: torch.Tensor) -> SharedUpdate:
    tensors = {name: torch.zeros_like(p) for name, p in model.named_parameters()}
    tensors["classifier.bias"] = bias_grad.float()
    return SharedUpdate(tensors)


def test_count_on_a_hand_made_bias_gradient() -> None:
    # g_c = p̄_c − count_c/B with p̄ exactly the attacker's estimate: the counts come back.
    model = build_model("lenet", num_classes=10, seed=0)
    knowledge = _knowledge(16)
    counts = torch.tensor([4, 0, 0, 3, 0, 5, 1, 0, 0, 3])
    mean = mean_softmax_estimate(model, knowledge)
    update = _hand_update(model, mean - counts.double() / 16)
    expected = torch.repeat_interleave(torch.arange(10), counts).tolist()
    assert count_labels(update, model, knowledge).tolist() == expected


def test_counts_from_bias_rounds_to_the_batch_size() -> None:
    # Uniform mean softmax, bias gradient of counts (2, 1, 0, 0) over B=3 plus small noise.
    mean = torch.full((4,), 0.25, dtype=torch.float64)
    bias = mean - torch.tensor([2.0, 1.0, 0.0, 0.0], dtype=torch.float64) / 3 + 0.01
    assert counts_from_bias(bias, mean, 3).tolist() == [2, 1, 0, 0]


def test_sign_fills_the_batch_by_cycling_the_negative_classes() -> None:
    model = build_model("lenet", num_classes=10, seed=0)
    bias = torch.tensor([0.1, -0.3, 0.1, -0.1, 0.1, 0.0, 0.0, 0.05, 0.05, 0.0])
    labels = sign_labels(_hand_update(model, bias), model, _knowledge(5))
    assert labels.tolist() == [1, 1, 1, 3, 3]  # classes 1 (most negative) and 3, cycled


def _biasless_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(3 * 32 * 32, 32), nn.Sigmoid(), nn.Linear(32, 10, bias=False)
    )


def test_count_refuses_a_classifier_without_bias() -> None:
    model = _biasless_model()
    batch = PrivateBatch(torch.randn(4, 3, 32, 32), torch.tensor([1, 2, 3, 4]))
    update = FedSGDClient(model).compute_update(batch)
    with pytest.raises(GradleakError, match="needs a bias on the classifier") as exc:
        count_labels(update, model, _knowledge(4))
    assert "\n" not in str(exc.value)


def test_sign_without_bias_reads_weight_row_sums() -> None:
    # Sigmoid features are positive, so row sums carry the bias gradient's sign.
    model = _biasless_model()
    batch = PrivateBatch(torch.randn(2, 3, 32, 32), torch.tensor([2, 7]))
    update = FedSGDClient(model).compute_update(batch)
    assert sign_labels(update, model, _knowledge(2)).tolist() == [2, 7]


@pytest.mark.parametrize("name", ["sign", "yin", "count"])
def test_strategies_refuse_weight_differences(name: str) -> None:
    model = build_model("lenet", num_classes=10, seed=0)
    delta = _hand_update(model, torch.zeros(10)).scaled(-0.1, UpdateKind.WEIGHT_DELTA)
    with pytest.raises(GradleakError, match="reads a gradient but the update is a weight_delta"):
        LABEL_STRATEGIES[name].recover(delta, model, _knowledge(2))
