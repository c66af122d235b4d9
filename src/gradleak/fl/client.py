"""What every federated client offers, and what the protocols' clients share."""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from gradleak.core.batch import PrivateBatch
from gradleak.core.update import SharedUpdate


class Client(Protocol):
    """A federated client: computes the update it shares from its private batch."""

    model: nn.Module  # the client's own model (defenses such as Soteria read it)

    def compute_update(self, batch: PrivateBatch) -> SharedUpdate: ...


def buffers_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's buffers (batch-norm running statistics), detached copies."""
    return {name: b.detach().clone() for name, b in model.named_buffers()}
