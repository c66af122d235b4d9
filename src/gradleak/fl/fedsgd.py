"""FedSGD: the client shares the gradient of its loss on one private batch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from gradleak.core.batch import PrivateBatch
from gradleak.core.knowledge import Knowledge
from gradleak.core.update import SharedUpdate, UpdateKind
from gradleak.fl.client import buffers_of, client_gradient, own_copy
from gradleak.fl.replay import Replay

if TYPE_CHECKING:
    from gradleak.fl.protocols import ProtocolSettings


class FedSGDClient:
    """Shares the named-parameter gradient of mean cross-entropy on one private batch.

    In train mode the forward pass also moves the batch-norm running statistics; with
    `share_buffers` the client sends them along (as FedAvg-style systems often do).

    Args:
        server_model: the model the server sent; the client computes on its own copy.
        model_mode: the client's batch-norm mode, "train" or "eval".
        share_buffers: send the batch-norm running statistics with the update.
    """

    def __init__(
        self, server_model: nn.Module, *, model_mode: str = "train", share_buffers: bool = False
    ) -> None:
        self.server_model = server_model
        self.model = own_copy(server_model, model_mode)
        self.model_mode = model_mode
        self.share_buffers = share_buffers

    def compute_update(
        self, batch: PrivateBatch, server_model: nn.Module | None = None
    ) -> SharedUpdate:
        """The gradient on `batch` at `server_model` (None: at the client's current model).

        Args:
            batch: the client's private batch.
            server_model: the server's model of this round.

        Returns:
            A `gradient` update with one tensor per named parameter.
        """
        if server_model is not None:
            self.server_model = server_model
            self.model = own_copy(server_model, self.model_mode)
        grads = client_gradient(self.model, batch.images, batch.labels)
        return SharedUpdate(
            {name: g.detach() for name, g in grads.items()},
            UpdateKind.GRADIENT,
            {"num_samples": len(batch), "protocol": "fedsgd"},
            buffers=buffers_of(self.model) if self.share_buffers else {},
        )


def client(server_model: nn.Module, settings: ProtocolSettings) -> FedSGDClient:
    """A FedSGD client for `settings` (registered in `fl/protocols.py`)."""
    return FedSGDClient(
        server_model, model_mode=settings.model_mode, share_buffers=settings.share_buffers
    )


def replay(knowledge: Knowledge, who: str) -> Replay:
    """The attacker's replay: one gradient per user, averaged over the users."""
    return Replay(knowledge.num_users)
