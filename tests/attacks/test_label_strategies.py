"""Label strategies: iDLG's analytic label on real images, and how `auto` chooses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from gradleak.attacks.labels import LABEL_STRATEGIES, idlg_label, resolve_label_strategy
from gradleak.core import PrivateBatch
from gradleak.core.errors import GradleakError
from gradleak.core.knowledge import Knowledge, Requirement
from gradleak.data import load_bundled_cifar10, normalize
from gradleak.fl import FedSGDClient
from gradleak.models import build_model
from gradleak.scenario import RunConfig, build_case

pytestmark = pytest.mark.usefixtures("one_thread")

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
# Bundled images 0, 1, 3, 4, 6 carry five different classes (3, 8, 0, 6, 1).
DISTINCT_LABEL_INDICES = (0, 1, 3, 4, 6)


def _bundled_batch(index: int) -> PrivateBatch:
    source = load_bundled_cifar10()
    image, label = source[index]
    return PrivateBatch(normalize(image, CIFAR_MEAN, CIFAR_STD).unsqueeze(0), torch.tensor([label]))


def test_bundled_indices_cover_distinct_labels() -> None:
    labels = [int(_bundled_batch(i).labels) for i in DISTINCT_LABEL_INDICES]
    assert len(set(labels)) == len(labels)


@pytest.mark.parametrize("model_name", ["lenet", "resnet20"])
@pytest.mark.parametrize("index", DISTINCT_LABEL_INDICES)
def test_idlg_label_recovers_the_true_label(model_name: str, index: int) -> None:
    model = build_model(model_name, num_classes=10, seed=0)
    batch = _bundled_batch(index)
    update = FedSGDClient(model).compute_update(batch)
    recovered = idlg_label(update, model)
    assert recovered.shape == (1,)
    assert recovered.dtype == torch.long
    assert recovered.tolist() == batch.labels.tolist()


def test_idlg_label_without_classifier_bias_uses_weight_rows() -> None:
    # Non-negative features (sigmoid) before a bias-free classifier: the row sums of the
    # weight gradient are negative only at the true class.
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(3 * 32 * 32, 32), nn.Sigmoid(), nn.Linear(32, 10, bias=False)
    )
    for index in DISTINCT_LABEL_INDICES:
        batch = _bundled_batch(index)
        update = FedSGDClient(model).compute_update(batch)
        assert "3.bias" not in update.tensors
        assert idlg_label(update, model).tolist() == batch.labels.tolist()


@pytest.mark.parametrize(
    ("dataset", "indices"),
    [("cifar10", (10, 11, 12, 13)), ("cifar100", (0, 1, 2, 3)), ("mnist", (0, 1, 2, 3))],
)
def test_idlg_label_on_real_datasets(shared_data: Path, dataset: str, indices: tuple) -> None:
    for index in indices:
        case = build_case(
            RunConfig(dataset=dataset, data_root=shared_data, indices=(index,), progress=False)
        )
        update = FedSGDClient(case.server.model).compute_update(case.client.batch)
        assert idlg_label(update, case.server.model).tolist() == case.client.batch.labels.tolist()


def _knowledge(batch_size: int, labels: list[int] | None) -> Knowledge:
    return Knowledge(
        data_shape=(3, 32, 32),
        num_classes=10,
        batch_size=batch_size,
        mean=CIFAR_MEAN,
        std=CIFAR_STD,
        labels=None if labels is None else torch.tensor(labels),
    )


@pytest.mark.parametrize(
    ("batch_size", "labels", "expected"),
    [
        (1, [4], "known"),
        (2, [4, 5], "known"),
        (1, None, "analytic"),
        (2, None, "optimize"),
        (8, None, "optimize"),
    ],
)
def test_auto_resolution(batch_size: int, labels: list[int] | None, expected: str) -> None:
    strategy = resolve_label_strategy("auto", _knowledge(batch_size, labels))
    assert strategy.name == expected
    assert strategy is LABEL_STRATEGIES[expected]


def test_explicit_names_resolve_regardless_of_knowledge() -> None:
    knowledge = _knowledge(2, None)
    for name in LABEL_STRATEGIES:
        assert resolve_label_strategy(name, knowledge).name == name


def test_unknown_strategy_lists_the_choices() -> None:
    with pytest.raises(GradleakError, match="unknown label strategy 'guess'") as exc:
        resolve_label_strategy("guess", _knowledge(1, None))
    assert "auto, known, analytic, optimize" in str(exc.value)


def test_strategy_requirements() -> None:
    assert LABEL_STRATEGIES["known"].requires == {Requirement.LABELS}
    assert LABEL_STRATEGIES["analytic"].requires == {Requirement.SINGLE_SAMPLE}
    assert LABEL_STRATEGIES["optimize"].requires == frozenset()


def test_strategies_recover_from_the_attackers_view() -> None:
    model = build_model("lenet", num_classes=10, seed=0)
    batch = _bundled_batch(1)
    update = FedSGDClient(model).compute_update(batch)
    known = _knowledge(1, [8])
    blind = _knowledge(1, None)
    recover: dict[str, Any] = {n: s.recover for n, s in LABEL_STRATEGIES.items()}
    assert recover["known"](update, model, known).tolist() == [8]
    assert recover["analytic"](update, model, blind).tolist() == batch.labels.tolist()
    assert recover["optimize"](update, model, blind) is None


def test_last_layer_strategies_read_a_model_that_is_one_linear_layer() -> None:
    # The classifier of a bare nn.Linear has no module name: its parameters are "weight"
    # and "bias", not ".weight" and ".bias".
    torch.manual_seed(0)
    model = nn.Linear(12, 5)
    images = torch.randn(3, 12)
    labels = torch.tensor([4, 1, 3])
    knowledge = Knowledge((1, 1, 12), 5, 1, (0.5,), (0.5,))
    for i in range(3):
        update = FedSGDClient(model).compute_update(
            PrivateBatch(images[i : i + 1], labels[i : i + 1])
        )
        assert set(update.tensors) == {"weight", "bias"}
        assert idlg_label(update, model).tolist() == [int(labels[i])]
        for name in ("analytic", "sign", "yin"):
            recovered = LABEL_STRATEGIES[name].recover(update, model, knowledge)
            assert recovered.tolist() == [int(labels[i])], name
    biasless = nn.Linear(12, 5, bias=False)
    update = FedSGDClient(biasless).compute_update(PrivateBatch(images[:1], labels[:1]))
    with pytest.raises(GradleakError, match="needs a bias on the classifier 'the model'"):
        LABEL_STRATEGIES["count"].recover(update, biasless, knowledge)
