"""The attacker's replay of what the clients computed, as a pure function of candidate data.

Each protocol module (`fedsgd`, `fedavg`, `fedadmm`) defines its client and the replay of
that client side by side, and the protocol registry hands an attack the replay of the
protocol that produced an update.

FedSGD shares a gradient, so the replay is one gradient. FedAvg shares θ_local − θ_server,
so the replay runs the client's local SGD steps on the candidate data, differentiably, and
returns the difference (Inverting Gradients' FedAvg setting). FedADMM's replay (in
`fedadmm.py`, a subclass) runs the client's whole ADMM round. With several users the
server sees the mean update, so the candidate batch is split into the users' equal shares
and their replays are averaged (exact also for batch norm, whose statistics are per user).
The per-step gradient is passed in: torch.func's `grad` (pure, so the replay can be
vmapped and compiled) or autograd with `create_graph` (which the memory estimate's
saved-tensor hooks can watch).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from gradleak.core.update import SharedUpdate, UpdateKind

if TYPE_CHECKING:
    from gradleak.fl.local_training import LocalTraining, StepDirection

Params = Mapping[str, torch.Tensor]
ParamGradient = Callable[[Params, torch.Tensor, torch.Tensor], "dict[str, torch.Tensor]"]


def unrolled_sgd(
    gradient: ParamGradient,
    start: Params,
    images: torch.Tensor,
    labels: torch.Tensor,
    local: LocalTraining,
    direction: StepDirection | None = None,
) -> dict[str, torch.Tensor]:
    """The parameters after `local`'s SGD steps from `start`, kept differentiable.

    The functional twin of `local_training.local_sgd`: the same mini-batches in the same
    order, and the same `direction` hook (FedADMM's dual and penalty terms).

    Args:
        gradient: ∇θ of the client's loss, `gradient(params, images, labels)`.
        start: the parameters the steps start from.
        images: one user's samples, walked as `local.step_slices` says.
        labels: their labels (integers or soft).
        local: the local training (steps or epochs, mini-batch size, learning rate).
        direction: what each step descends instead of the plain gradient.

    Returns:
        The parameters after the last step, by name.
    """
    current = dict(start)
    for rows in local.step_slices(images.shape[0]):
        step = gradient(current, images[rows], labels[rows])
        if direction is not None:
            step = {name: direction(name, current[name], step[name]) for name in current}
        current = {name: current[name] - local.lr * step[name] for name in current}
    return current


@dataclass(frozen=True)
class Replay:
    """How one update was produced: users averaged, and local training (None: a gradient).

    `read_scale`, when set, says the shared update is not replayed as it is: the update times
    `read_scale` is matched as if it were a gradient (the `gradient` reading of a FedADMM
    increment, −Δ/η). Subclasses replay other clients (FedADMM's round) by overriding
    `_one_user`, `read` and `label_reading`.
    """

    users: int = 1
    local: LocalTraining | None = None
    read_scale: float | None = None

    @property
    def is_plain_gradient(self) -> bool:
        return self.users == 1 and self.local is None

    def read(self, update: SharedUpdate) -> SharedUpdate:
        """The shared update as the replay's output is compared with it."""
        if self.read_scale is None:
            return update
        return update.scaled(self.read_scale, UpdateKind.GRADIENT)

    def label_reading(self, update: SharedUpdate, model: nn.Module) -> SharedUpdate:
        """The shared update as label strategies read it: with the signs of the gradients.

        A gradient is itself. Any other update is turned to the signs of the clients' summed
        gradients and keeps its kind, so strategies that need a gradient's magnitudes refuse
        it: −Δ for a weight difference Δ, since local SGD moves against the gradients.

        Args:
            update: the shared update, as the server received it.
            model: the server's model (subclasses read their consensus from it).
        """
        if update.kind is UpdateKind.GRADIENT:
            return update
        return update.scaled(-1.0, update.kind)

    def __call__(
        self, gradient: ParamGradient, params: Params, images: torch.Tensor, labels: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The update the clients would share if their data were (images, labels).

        `gradient(params, images, labels)` is ∇θ of the client's loss at `params`.
        """
        n = images.shape[0] // self.users
        shares = [
            self._one_user(
                gradient, params, images[i * n : (i + 1) * n], labels[i * n : (i + 1) * n], i
            )
            for i in range(self.users)
        ]
        if self.users == 1:
            return shares[0]
        return {name: torch.stack([s[name] for s in shares]).mean(dim=0) for name in params}

    def _one_user(
        self,
        gradient: ParamGradient,
        params: Params,
        images: torch.Tensor,
        labels: torch.Tensor,
        user: int,
    ) -> dict[str, torch.Tensor]:
        """User `user`'s update on its share of the candidate batch."""
        if self.local is None:
            return gradient(params, images, labels)
        end = unrolled_sgd(gradient, params, images, labels, self.local)
        return {name: end[name] - params[name] for name in params}

    def describe(self) -> dict[str, object]:
        """What the replay assumed, for the run's records."""
        reading = "replayed"
        if self.read_scale is not None:
            reading = f"update × {self.read_scale:g} matched as one gradient per user"
        return {
            "users": self.users,
            "local_training": None if self.local is None else self.local.describe(),
            "reading": reading,
        }
