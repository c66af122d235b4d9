"""FedADMM client: local primal steps on the augmented Lagrangian, a dual step, and the
increment of x + π/ρ as the shared update.

With the global model z, the client's primal variable x (starts at z) and dual variable
π (starts at 0), one round is

    for each local step s:  x ← x − η (∇f(x; batch_s) + π + ρ (x − z))
    π ← π + ρ (x − z)
    share Δ = (x + π/ρ) − (x_before + π_before/ρ)

and the server moves z by the mean Δ. The client keeps x and π between rounds.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from gradleak.core.batch import PrivateBatch
from gradleak.core.errors import GradleakError
from gradleak.core.knowledge import Knowledge, Requirement
from gradleak.core.update import SharedUpdate, UpdateKind
from gradleak.fl.client import buffers_of, own_copy
from gradleak.fl.local_training import LocalTraining, local_sgd
from gradleak.fl.replay import Replay

if TYPE_CHECKING:
    from gradleak.fl.protocols import ProtocolSettings


class FedADMMClient:
    """One FedADMM client; `compute_update` runs one round against the given global model.

    Args:
        server_model: the initial global model z; the client's x starts there, π at 0.
        local: the local training (steps or epochs, mini-batch size, learning rate η).
        rho: the ADMM penalty ρ > 0.
        model_mode: the client's batch-norm mode, "train" or "eval".
        share_buffers: send the batch-norm running statistics with the update.

    Raises:
        GradleakError: ρ is not a positive finite number.
    """

    def __init__(
        self,
        server_model: nn.Module,
        local: LocalTraining,
        *,
        rho: float = 1.0,
        model_mode: str = "train",
        share_buffers: bool = False,
    ) -> None:
        if not (rho > 0 and math.isfinite(rho)):
            raise GradleakError(f"ADMM penalty rho must be positive, got {rho}")
        self.local = local
        self.rho = float(rho)
        self.model_mode = model_mode
        self.share_buffers = share_buffers
        self.model = own_copy(server_model, model_mode)
        self.dual = {n: torch.zeros_like(p) for n, p in self.model.named_parameters()}
        self.global_params = {n: p.detach().clone() for n, p in server_model.named_parameters()}

    def compute_update(
        self, batch: PrivateBatch, server_model: nn.Module | None = None
    ) -> SharedUpdate:
        """One round with `server_model` as the global z (None: keep the last one).

        The client's x and π carry over from its previous round; only z and the batch-norm
        buffers come from the server.

        Args:
            batch: the client's private samples, walked as `local` says.
            server_model: the server's model of this round.

        Returns:
            An `admm_increment` update: the change of x + π/ρ over the round.
        """
        if server_model is not None:
            self.global_params = {n: p.detach().clone() for n, p in server_model.named_parameters()}
            own = dict(self.model.named_buffers())
            for name, buffer in server_model.named_buffers():  # buffers follow the server's
                own[name].copy_(buffer)
        z = self.global_params
        before = self._shared_variable()

        def augmented(name: str, param: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
            # ∇ of f + ⟨π, x − z⟩ + ρ/2‖x − z‖² with respect to x.
            return grad + self.dual[name] + self.rho * (param - z[name])

        local_sgd(self.model, batch, self.local, augmented)
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                self.dual[name] += self.rho * (p - z[name])
        after = self._shared_variable()
        return SharedUpdate(
            {n: after[n] - before[n] for n in after},
            UpdateKind.ADMM_INCREMENT,
            {"num_samples": len(batch), "protocol": "fedadmm", "rho": self.rho},
            buffers=buffers_of(self.model) if self.share_buffers else {},
        )

    def _shared_variable(self) -> dict[str, torch.Tensor]:
        """x + π/ρ, the quantity whose increments the client shares."""
        return {n: p.detach() + self.dual[n] / self.rho for n, p in self.model.named_parameters()}


def client(server_model: nn.Module, settings: ProtocolSettings) -> FedADMMClient:
    """A FedADMM client for `settings` (registered in `fl/protocols.py`)."""
    assert settings.local is not None  # ProtocolSettings fills the default local training
    return FedADMMClient(
        server_model,
        settings.local,
        rho=settings.rho,
        model_mode=settings.model_mode,
        share_buffers=settings.share_buffers,
    )


def replay(knowledge: Knowledge, who: str) -> Replay:
    """The -admm attacks' reading: −Δ/η matched as if it were the client's gradient.

    After local SGD steps of size η the increment is a multiple of −η × the gradients the
    client took (twice one gradient in a first round of one step), so −Δ/η is compared
    with one replayed gradient per user; η is the attacker's belief of the local rate.

    Raises:
        GradleakError: the threat model gives the attacker no belief of the local training.
    """
    knowledge.require({Requirement.LOCAL_TRAINING}, who)
    assert knowledge.local_training is not None  # guaranteed by the requirement
    return Replay(knowledge.num_users, read_scale=-1.0 / knowledge.local_training.lr)
