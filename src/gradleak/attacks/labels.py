"""Label strategies: where an optimisation attack gets the labels it matches with."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from gradleak.errors import GradleakError
from gradleak.fl.update import SharedUpdate
from gradleak.models import classifier_layer
from gradleak.threat_model import Knowledge, Requirement

# None means "no fixed labels: optimise soft labels jointly with the images".
LabelRecovery = Callable[[SharedUpdate, nn.Module, Knowledge], "torch.Tensor | None"]


@dataclass(frozen=True)
class LabelStrategy:
    name: str
    description: str
    requires: frozenset[Requirement]
    recover: LabelRecovery
    recovers: bool = True  # False: the labels are handed over, so they are not a result


def idlg_label(update: SharedUpdate, model: nn.Module) -> torch.Tensor:
    """iDLG (Zhao et al. 2020): the one class whose last-layer gradient is negative.

    With softmax cross-entropy the bias gradient of the classifier is p − onehot(y), negative
    only at the true class; without a bias, the weight rows are (p − onehot(y))·features and
    features after a sigmoid/ReLU are non-negative, so the row sums give the same sign.
    """
    name, _layer = classifier_layer(model)
    bias = update.tensors.get(f"{name}.bias")
    if bias is not None:
        return bias.argmin().reshape(1)
    weight = update.tensors[f"{name}.weight"]
    return weight.sum(dim=1).argmin().reshape(1)


def _known(update: SharedUpdate, model: nn.Module, knowledge: Knowledge) -> torch.Tensor:
    assert knowledge.labels is not None  # guaranteed by the LABELS requirement
    return knowledge.labels


def _analytic(update: SharedUpdate, model: nn.Module, knowledge: Knowledge) -> torch.Tensor:
    return idlg_label(update, model)


def _optimize(update: SharedUpdate, model: nn.Module, knowledge: Knowledge) -> None:
    return None


LABEL_STRATEGIES: dict[str, LabelStrategy] = {
    s.name: s
    for s in (
        LabelStrategy(
            "known",
            "labels granted by the threat model",
            frozenset({Requirement.LABELS}),
            _known,
            recovers=False,
        ),
        LabelStrategy(
            "analytic",
            "iDLG: read from the sign of the last layer's gradient (batch 1)",
            frozenset({Requirement.SINGLE_SAMPLE}),
            _analytic,
        ),
        LabelStrategy(
            "optimize", "DLG: soft labels optimised jointly with the images", frozenset(), _optimize
        ),
    )
}

AUTO = "auto"


def resolve_label_strategy(name: str, knowledge: Knowledge) -> LabelStrategy:
    """Pick the strategy; `auto` uses known labels, else iDLG for batch 1, else optimisation."""
    if name == AUTO:
        if knowledge.labels_known:
            name = "known"
        elif knowledge.batch_size == 1:
            name = "analytic"
        else:
            name = "optimize"
    try:
        return LABEL_STRATEGIES[name]
    except KeyError:
        choices = ", ".join([AUTO, *LABEL_STRATEGIES])
        raise GradleakError(f"unknown label strategy {name!r}; choose one of: {choices}") from None
