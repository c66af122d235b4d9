"""FedADMM: the client (local primal steps on the augmented Lagrangian, a dual step, the
increment of x + π/ρ as the shared update) and the attacker's replay of that client.

With the global model z, the client's primal variable x (starts at z) and dual variable
π (starts at 0), one round is

    for each local step s:  x ← x − η (∇f(x; batch_s) + π + ρ (x − z))
    π ← π + ρ (x − z)
    share Δ = (x + π/ρ) − (x_before + π_before/ρ)

and the server moves z by the mean Δ. The client keeps x and π between rounds.

The step's penalty terms, the dual step and the shared variable x + π/ρ each have one home
here (`penalty_gradient`, `dual_step`, `shared_variable`), used by the client on its
private data and by `ADMMReplay` on the attacker's candidate data, so the two cannot drift
apart. The replay runs the whole round from the client's state and returns −Δ'/η, which
the attacks match with the shared −Δ/η (DLG-ADMM as written: both sides of the distance go
through the same client computation). In a first round of one step, −Δ/η = 2∇f on both
sides, so the distance is zero at the true data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from gradleak.core.batch import PrivateBatch
from gradleak.core.errors import GradleakError
from gradleak.core.knowledge import ClientState, Knowledge, Requirement
from gradleak.core.update import SharedUpdate, UpdateKind
from gradleak.fl.client import Client, buffers_of, own_copy
from gradleak.fl.local_training import LocalTraining, StepDirection, local_sgd
from gradleak.fl.replay import ParamGradient, Params, Replay, unrolled_sgd

if TYPE_CHECKING:
    from gradleak.fl.protocols import ProtocolSettings


def penalty_gradient(
    param: torch.Tensor, dual: torch.Tensor, consensus: torch.Tensor, rho: float
) -> torch.Tensor:
    """π + ρ(x − z): the gradient of ⟨π, x − z⟩ + ρ/2 ‖x − z‖² with respect to x.

    A local step descends ∇f(x) plus these terms (the augmented Lagrangian's gradient).
    """
    return dual + rho * (param - consensus)


def augmented_direction(dual: Params, consensus: Params, rho: float) -> StepDirection:
    """The direction of every local step, ∇f(x; b) + π + ρ(x − z), as SGD loops take it.

    Args:
        dual: π by parameter name, fixed during the round.
        consensus: the global model z by parameter name.
        rho: the penalty ρ.
    """

    def direction(name: str, param: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        return grad + penalty_gradient(param, dual[name], consensus[name], rho)

    return direction


def dual_step(
    dual: torch.Tensor, param: torch.Tensor, consensus: torch.Tensor, rho: float
) -> torch.Tensor:
    """π' = π + ρ(x' − z): the dual ascent step at the end of a round."""
    return dual + rho * (param - consensus)


def shared_variable(param: torch.Tensor, dual: torch.Tensor, rho: float) -> torch.Tensor:
    """x + π/ρ: the variable whose increments the client shares."""
    return param + dual / rho


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
        self.server_model = server_model
        self.local = local
        self.rho = float(rho)
        self.model_mode = model_mode
        self.share_buffers = share_buffers
        self.model = own_copy(server_model, model_mode)
        self.dual = {n: torch.zeros_like(p) for n, p in self.model.named_parameters()}
        self.global_params = {n: p.detach().clone() for n, p in server_model.named_parameters()}
        # x and π at the start of the round last computed (before any: round 1's start).
        self.round_start = self._state()

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
            self.server_model = server_model
            self.global_params = {n: p.detach().clone() for n, p in server_model.named_parameters()}
            own = dict(self.model.named_buffers())
            for name, buffer in server_model.named_buffers():  # buffers follow the server's
                own[name].copy_(buffer)
        z = self.global_params
        self.round_start = self._state()
        before = self._shared_variable()
        local_sgd(self.model, batch, self.local, augmented_direction(self.dual, z, self.rho))
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                self.dual[name] = dual_step(self.dual[name], p, z[name], self.rho)
        after = self._shared_variable()
        return SharedUpdate(
            {n: after[n] - before[n] for n in after},
            UpdateKind.ADMM_INCREMENT,
            {"num_samples": len(batch), "protocol": "fedadmm", "rho": self.rho},
            buffers=buffers_of(self.model) if self.share_buffers else {},
        )

    def _state(self) -> ClientState:
        return ClientState(dict(self.model.named_parameters()), self.dual)

    def _shared_variable(self) -> dict[str, torch.Tensor]:
        return {
            n: shared_variable(p.detach(), self.dual[n], self.rho)
            for n, p in self.model.named_parameters()
        }


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


def round_start_state(member: Client) -> ClientState:
    """A FedADMM client's x and π at the start of the round it last computed."""
    assert isinstance(member, FedADMMClient)  # registered for FedADMM clients only
    return member.round_start


@dataclass(frozen=True, eq=False)
class ADMMReplay(Replay):
    """The attacker's replay of FedADMM clients: each user's whole round, differentiably.

    From the user's state (x, π; round 1: x = z, π = 0) with z the server's model, the
    client's local steps x ← x − η(∇f(x; b) + π + ρ(x − z)) run on the user's share of the
    candidate data, then π' = π + ρ(x' − z), and the replay returns −Δ'/η with
    Δ' = (x' + π'/ρ) − (x + π/ρ), averaged over the users; `read` gives the shared −Δ/η.

    Attributes:
        rho: the attacker's belief of the penalty ρ.
        states: each user's (x, π) at the start of the attacked round; None: round 1's.
        samples_per_user: how many samples each user trained on (the number of local steps
            of an epoch depends on it).
    """

    rho: float = 1.0
    states: tuple[ClientState, ...] | None = None
    samples_per_user: int = 1

    def read(self, update: SharedUpdate) -> SharedUpdate:
        """−Δ/η, still an increment: it is compared with the replayed −Δ'/η."""
        assert self.read_scale is not None  # `replay` sets −1/η
        return update.scaled(self.read_scale, update.kind)

    def label_reading(self, update: SharedUpdate, model: nn.Module) -> SharedUpdate:
        """The mean gradient of the local steps, as far as the increment gives it.

        After S local steps from (x, π), −Δ/η = 2 Σ_s (∇f(x_s) + π + ρ(x_s − z)) − (x − z)/η.
        Taking the known start's terms (x_s ≈ x) away and dividing by 2S leaves the mean of
        the steps' gradients: exact for one step (round 1: −Δ/(2η) = ∇f), first order in η
        for more. The kind stays an increment, so only strategies that read signs use it.

        Args:
            update: the shared (mean) increment Δ.
            model: the server's model, z.
        """
        assert self.local is not None and self.read_scale is not None  # set by `replay`
        steps = len(self.local.step_slices(self.samples_per_user))
        z = {n: p.detach() for n, p in model.named_parameters()}
        known = {n: torch.zeros_like(t) for n, t in update.tensors.items()}
        for user in range(self.users):
            x, pi = self._start(z, user)
            for n in known:
                penalty = penalty_gradient(x[n], pi[n], z[n], self.rho)
                known[n] += (2 * steps * penalty - (x[n] - z[n]) / self.local.lr) / self.users
        tensors = {
            n: (self.read_scale * delta - known[n]) / (2 * steps)
            for n, delta in update.tensors.items()
        }
        return SharedUpdate(tensors, update.kind, update.metadata, buffers=update.buffers)

    def _one_user(
        self,
        gradient: ParamGradient,
        params: Params,
        images: torch.Tensor,
        labels: torch.Tensor,
        user: int,
    ) -> dict[str, torch.Tensor]:
        assert self.local is not None and self.read_scale is not None  # set by `replay`
        x, pi = self._start(params, user)
        before = {n: shared_variable(x[n], pi[n], self.rho) for n in x}
        direction = augmented_direction(pi, params, self.rho)
        end = unrolled_sgd(gradient, x, images, labels, self.local, direction)
        return {
            n: self.read_scale
            * (
                shared_variable(end[n], dual_step(pi[n], end[n], params[n], self.rho), self.rho)
                - before[n]
            )
            for n in end
        }

    def _start(
        self, params: Params, user: int
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """User `user`'s x and π at the start of the round; `params` is z."""
        if self.states is None:
            return dict(params), {n: torch.zeros_like(p) for n, p in params.items()}
        state = self.states[user]
        # x as z plus a constant: the same values, and on the autograd path still connected
        # to the parameters the client's gradient is taken with respect to.
        x = {n: p + (state.primal[n].to(p) - p.detach()) for n, p in params.items()}
        return x, {n: state.dual[n].to(p) for n, p in params.items()}

    def describe(self) -> dict[str, object]:
        """What the replay assumed: users, local training, ρ and the clients' start."""
        start = "round 1: x = z, π = 0" if self.states is None else "granted x and π per user"
        return {
            **super().describe(),
            "reading": "the client's ADMM round replayed; −Δ'/η matched with −Δ/η",
            "rho": self.rho,
            "client_state": start,
        }


def replay(knowledge: Knowledge, who: str) -> ADMMReplay:
    """The attacker's replay of the FedADMM clients (the default reading).

    Raises:
        GradleakError: the threat model gives the attacker no belief of the local training,
            or no client state after round 1 (one line naming the fix).
    """
    knowledge.require({Requirement.LOCAL_TRAINING}, who)
    knowledge.require({Requirement.ADMM_STATE}, who)
    local, admm = knowledge.local_training, knowledge.admm
    assert local is not None and admm is not None  # guaranteed by the requirements
    return ADMMReplay(
        knowledge.num_users,
        local,
        read_scale=-1.0 / local.lr,
        rho=admm.rho,
        states=admm.states,
        samples_per_user=knowledge.batch_size // knowledge.num_users,
    )


def gradient_reading(knowledge: Knowledge, who: str) -> Replay:
    """The `gradient` reading: −Δ/η matched as if it were one plain gradient per user.

    It does not replay the client: in a first round of one step −Δ/η is 2∇f, so the L2
    distance has no zero at the true data; kept for contrast with the replay.

    Raises:
        GradleakError: the threat model gives the attacker no belief of the local training.
    """
    knowledge.require({Requirement.LOCAL_TRAINING}, who)
    assert knowledge.local_training is not None  # guaranteed by the requirement
    return Replay(knowledge.num_users, read_scale=-1.0 / knowledge.local_training.lr)
