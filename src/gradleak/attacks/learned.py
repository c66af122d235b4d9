"""Learned inversion: a trained network reads the images out of the update in one pass.

The attacker trained an inverter (`gradleak train-inverter`) on updates of its own
auxiliary images for the server's model and the protocol ("Learning to Invert", Wu et al.
2023). Attacking is one forward pass: the update's sketch goes in, the batch's images come
out. The inverter serves only the setting it was trained for (the server model's state,
batch size, image shape and normalisation, protocol); any other is refused in one line
before any work.

The attack is named `learned:PATH` in the registry (`attacks.registry.get`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gradleak.attacks.closed_form.base import check_no_iterations
from gradleak.attacks.engine.hooks import Observer
from gradleak.attacks.labels import LABEL_STRATEGIES, LabelStrategy
from gradleak.attacks.priors.inverter import LearnedInverter, load_inverter
from gradleak.attacks.reconstruction import Reconstruction
from gradleak.core.batch import PrivateBatch
from gradleak.core.errors import GradleakError
from gradleak.core.knowledge import Knowledge
from gradleak.core.settings import replace_checked
from gradleak.core.update import SharedUpdate, UpdateKind
from gradleak.fl.protocols import ProtocolSettings, protocol_sharing
from gradleak.fl.rounds import simulate

BASE_NAME = "learned"


@dataclass(frozen=True)
class LearnedConfig:
    """Settings of the learned inversion: the inverter file; nothing iterates.

    Attributes:
        path: the inverter file written by `gradleak train-inverter`.
        iterations: always 0 (one forward pass).
        restarts: always 1.
    """

    path: str = ""
    iterations: int = 0
    restarts: int = 1

    def validate(self) -> LearnedConfig:
        if not self.path:
            raise GradleakError(
                f"attack '{BASE_NAME}' needs an inverter file: --attack {BASE_NAME}:PATH "
                "(train one with gradleak train-inverter)"
            )
        check_no_iterations(self.iterations, self.restarts, f"attack '{BASE_NAME}'")
        return self


class LearnedInversionAttack:
    """Reconstructs a batch with a trained inverter in one forward pass.

    Args:
        path: the inverter file (loaded now: a missing or foreign file fails here).
        name: the attack's name (None: "learned:PATH").
        config: its settings (None: `LearnedConfig(path)`).

    Raises:
        GradleakError: the file is missing, not an inverter, or damaged (one line).
    """

    def __init__(
        self, path: str | Path, name: str | None = None, config: LearnedConfig | None = None
    ) -> None:
        self.config = (config or LearnedConfig(str(path))).validate()
        self.name = name or f"{BASE_NAME}:{self.config.path}"
        self.inverter: LearnedInverter = load_inverter(Path(self.config.path))

    @property
    def reads(self) -> frozenset[UpdateKind]:
        """The kind of update the inverter was trained on.

        Returns:
            {the inverter's update kind} (a gradient for FedSGD, a weight difference for
            FedAvg).
        """
        return frozenset({self.inverter.update_kind})

    def with_options(self, options: Mapping[str, Any]) -> LearnedInversionAttack:
        """A copy with options overridden (`path` loads another inverter).

        Raises:
            GradleakError: an unknown key, a wrong type, iterations other than 0, or a
                path that is no inverter.
        """
        config = replace_checked(self.config, options, f"attack '{self.name}' options")
        return LearnedInversionAttack(config.path, self.name, config)

    def check_model(self, model: nn.Module, data_shape: tuple[int, ...], batch_size: int) -> None:
        """Refuse a server model, image shape or batch size the inverter was not trained for.

        Raises:
            GradleakError: naming what the inverter was trained for and how to train one.
        """
        from gradleak.models.checkpoint import model_fingerprint

        inv = self.inverter
        if model_fingerprint(model) != inv.fingerprint:
            raise GradleakError(
                f"attack '{self.name}': the inverter was trained for {inv.describe()}, but the "
                f"server model differs; {inv.train_hint()}"
            )
        if tuple(data_shape) != inv.data_shape or batch_size != inv.batch_size:
            raise GradleakError(
                f"attack '{self.name}': the inverter was trained for {inv.describe()}, but the "
                f"run has batch size {batch_size} and images {'×'.join(map(str, data_shape))}; "
                f"{inv.train_hint()}"
            )

    def reconstruct(
        self,
        update: SharedUpdate,
        model: nn.Module,
        knowledge: Knowledge,
        *,
        seed: int = 0,
        observer: Observer | None = None,
        progress: bool = True,
    ) -> Reconstruction:
        """The batch behind `update`, in one forward pass of the inverter.

        Labels: the granted labels; else iDLG's sign reading for batch 1; else, for a
        gradient, the classes with a negative last-layer bias gradient ('sign'); else none.
        For batch 1, `loss` is the cosine distance between the shared update and the update
        the protocol's client computes from the reconstruction and its label: a check of
        the reconstruction that needs no truth. For larger batches, which label goes with
        which reconstructed image is unknown, so `loss` is NaN (n/a).

        Args:
            update: the shared update.
            model: the server's model (left unchanged).
            knowledge: the threat model (batch size, data shape, protocol as believed).
            seed: unused (nothing is random).
            observer: unused (nothing iterates).
            progress: unused.

        Returns:
            The images B×C×H×W in the normalised space, the labels, 0 iterations, and
            details naming the inverter and what it was trained for.

        Raises:
            GradleakError: the update does not fit the model, or the setting is not the
                inverter's (checked before any work).
        """
        start = time.perf_counter()
        update.validate_for(model)
        self.inverter.check_fits(model, knowledge, update, f"attack '{self.name}'")
        images = self.inverter.invert(update)
        strategy = _label_strategy(update, knowledge)
        labels = None
        if strategy is not None:
            knowledge.require(strategy.requires, f"attack '{self.name}'")
            labels = strategy.recover(_label_reading(update), model, knowledge)
            labels = None if labels is None else labels.long()
        distance = _replayed_distance(update, model, knowledge, images, labels)
        inv = self.inverter
        details: dict[str, object] = {
            # The key `attacks.priors.nearest` reads to show the nearest training images.
            "inverter_file": str(inv.path),
            "trained_for": inv.describe(),
            "inverter_epochs": inv.epochs,
            "auxiliary_images": inv.dataset,
            "loss": "cosine distance of the reconstruction's replayed update",
        }
        return Reconstruction(
            images=images,
            labels=labels,
            loss=distance,
            iterations=0,
            seconds=time.perf_counter() - start,
            trial_losses=[distance],
            label_strategy=strategy.name if labels is not None and strategy else "none",
            labels_recovered=strategy.recovers if strategy is not None else True,
            details=details,
        )


def _label_strategy(update: SharedUpdate, knowledge: Knowledge) -> LabelStrategy | None:
    """Known labels if granted; iDLG for batch 1; 'sign' for a gradient; else none."""
    if knowledge.labels_known:
        return LABEL_STRATEGIES["known"]
    if knowledge.batch_size == 1:
        return LABEL_STRATEGIES["analytic"]
    if update.kind is UpdateKind.GRADIENT:
        return LABEL_STRATEGIES["sign"]
    return None


def _label_reading(update: SharedUpdate) -> SharedUpdate:
    """The update with the signs of the clients' gradients (−Δ for a weight difference)."""
    if update.kind is UpdateKind.GRADIENT:
        return update
    return update.scaled(-1.0, update.kind)


def _replayed_distance(
    update: SharedUpdate,
    model: nn.Module,
    knowledge: Knowledge,
    images: torch.Tensor,
    labels: torch.Tensor | None,
) -> float:
    """1 − cos(shared update, the update of (images, labels) by the protocol's client);
    NaN without labels or for a batch (its images and labels are not paired)."""
    if labels is None or images.shape[0] != 1:
        return math.nan
    settings = ProtocolSettings(
        protocol_sharing(update.kind).name,
        knowledge.local_training,
        users=knowledge.num_users,
        model_mode=knowledge.model_mode,
    )
    replayed = simulate(model, PrivateBatch(images, labels), settings).update
    names = [name for name, _ in model.named_parameters()]
    a = torch.cat([update.tensors[n].double().flatten() for n in names])
    b = torch.cat([replayed.tensors[n].double().flatten() for n in names])
    denominator = float(a.norm() * b.norm())
    return 1.0 - float(a @ b) / denominator if denominator > 0 else math.nan


def build(argument: str) -> LearnedInversionAttack:
    """The learned inversion with the inverter at `argument` (registered as learned:PATH).

    Raises:
        GradleakError: the file is missing, not an inverter, or damaged.
    """
    return LearnedInversionAttack(argument)
