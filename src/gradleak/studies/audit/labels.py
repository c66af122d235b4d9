"""Label recovery on its own: the labels an update gives away, read in closed form.

The audit's first attack reads the batch's labels straight off the shared update with the
strongest label strategy that applies (`selection.label_strategy`): iDLG's sign reading for
one sample, label counts from a gradient's last layer for several. It needs no images and
no time, so an audit always says what the labels leak, even where no image attack runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gradleak.attacks.labels import LABEL_STRATEGIES
from gradleak.core.knowledge import Knowledge
from gradleak.core.update import SharedUpdate, UpdateKind
from gradleak.fl.protocols import protocol_sharing


@dataclass(frozen=True)
class LabelReadingConfig:
    """The reading's settings: the label strategy (a name of `LABEL_STRATEGIES`)."""

    label_strategy: str = "analytic"
    iterations: int = 0
    restarts: int = 1


@dataclass(frozen=True)
class LabelReading:
    """Reads the labels of one update; scored as a multiset (no images to match them to)."""

    name: str = "labels"
    config: LabelReadingConfig = LabelReadingConfig()

    @property
    def reads(self) -> frozenset[UpdateKind]:
        """Gradients and weight differences (read through their protocol's label reading)."""
        return frozenset({UpdateKind.GRADIENT, UpdateKind.WEIGHT_DELTA})

    def with_options(self, options: Mapping[str, Any]) -> LabelReading:
        """A copy with the label strategy given (`label_strategy`), the only option."""
        return LabelReading(self.name, LabelReadingConfig(**dict(options)))

    def read(self, update: SharedUpdate, model: nn.Module, knowledge: Knowledge) -> torch.Tensor:
        """The update's labels, one per sample of the batch.

        Args:
            update: the shared update.
            model: the server's model it was computed at.
            knowledge: the threat model (batch size, classes).

        Returns:
            The recovered labels, int64, in no particular order.

        Raises:
            GradleakError: the strategy cannot read this update (its kind, its batch).
        """
        strategy = LABEL_STRATEGIES[self.config.label_strategy]
        knowledge.require(strategy.requires, f"label strategy '{strategy.name}'")
        replay = protocol_sharing(update.kind).replay(knowledge, "the label reading")
        labels = strategy.recover(replay.label_reading(update, model), model, knowledge)
        assert labels is not None  # the audit picks strategies that read labels
        return labels.reshape(-1)
