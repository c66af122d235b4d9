"""FedAvg: the client trains locally with SGD, then shares the weight difference."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from gradleak.core.batch import PrivateBatch
from gradleak.core.knowledge import Knowledge, Requirement
from gradleak.core.update import SharedUpdate, UpdateKind
from gradleak.fl.client import buffers_of, own_copy
from gradleak.fl.local_training import LocalTraining, local_sgd
from gradleak.fl.replay import Replay

if TYPE_CHECKING:
    from gradleak.fl.protocols import ProtocolSettings


class FedAvgClient:
    """Shares θ_local − θ_server after `local` training on its private samples.

    Args:
        server_model: the model the server sent; every round starts from the server's model.
        local: the local training (steps or epochs, mini-batch size, learning rate).
        model_mode: the client's batch-norm mode, "train" or "eval".
        share_buffers: send the batch-norm running statistics with the update.
    """

    def __init__(
        self,
        server_model: nn.Module,
        local: LocalTraining,
        *,
        model_mode: str = "train",
        share_buffers: bool = False,
    ) -> None:
        self.server_model = server_model
        self.local = local
        self.model_mode = model_mode
        self.share_buffers = share_buffers
        self.model = own_copy(server_model, model_mode)

    def compute_update(
        self, batch: PrivateBatch, server_model: nn.Module | None = None
    ) -> SharedUpdate:
        """Train locally from `server_model` (None: the last one given) and share the change.

        Args:
            batch: the client's private samples, walked as `local` says.
            server_model: the server's model of this round.

        Returns:
            A `weight_delta` update: θ_local − θ_server per named parameter.
        """
        if server_model is not None:
            self.server_model = server_model
        # The client keeps no state between rounds: it starts from the server's model.
        self.model = own_copy(self.server_model, self.model_mode)
        start = {n: p.detach().clone() for n, p in self.model.named_parameters()}
        local_sgd(self.model, batch, self.local)
        delta = {n: p.detach() - start[n] for n, p in self.model.named_parameters()}
        return SharedUpdate(
            delta,
            UpdateKind.WEIGHT_DELTA,
            {"num_samples": len(batch), "protocol": "fedavg"},
            buffers=buffers_of(self.model) if self.share_buffers else {},
        )


def client(server_model: nn.Module, settings: ProtocolSettings) -> FedAvgClient:
    """A FedAvg client for `settings` (registered in `fl/protocols.py`)."""
    assert settings.local is not None  # ProtocolSettings fills the default local training
    return FedAvgClient(
        server_model,
        settings.local,
        model_mode=settings.model_mode,
        share_buffers=settings.share_buffers,
    )


def replay(knowledge: Knowledge, who: str) -> Replay:
    """The attacker's replay: the client's local SGD steps unrolled, averaged over users.

    Raises:
        GradleakError: the threat model gives the attacker no belief of the local training.
    """
    knowledge.require({Requirement.LOCAL_TRAINING}, who)
    return Replay(knowledge.num_users, knowledge.local_training)
