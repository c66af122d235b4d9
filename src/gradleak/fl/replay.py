"""The attacker's replay of what the clients computed, as a pure function of candidate data.

Each protocol module (`fedsgd`, `fedavg`, `fedadmm`) defines its client and the replay of
that client side by side, and the protocol registry hands an attack the replay of the
protocol that produced an update.

FedSGD shares a gradient, so the replay is one gradient. FedAvg shares θ_local − θ_server,
so the replay runs the client's local SGD steps on the candidate data, differentiably, and
returns the difference (Inverting Gradients' FedAvg setting). With several users the
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

from gradleak.core.update import SharedUpdate, UpdateKind

if TYPE_CHECKING:
    from gradleak.fl.local_training import LocalTraining

Params = Mapping[str, torch.Tensor]
ParamGradient = Callable[[Params, torch.Tensor, torch.Tensor], "dict[str, torch.Tensor]"]


@dataclass(frozen=True)
class Replay:
    """How one update was produced: users averaged, and local training (None: a gradient).

    `read_scale`, when set, says the shared update is not replayed as it is: the update times
    `read_scale` is matched as if it were a gradient (the -admm attacks' reading of a FedADMM
    increment, −Δ/η).
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

    def __call__(
        self, gradient: ParamGradient, params: Params, images: torch.Tensor, labels: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The update the clients would share if their data were (images, labels).

        `gradient(params, images, labels)` is ∇θ of the client's loss at `params`.
        """
        n = images.shape[0] // self.users
        shares = [
            self._one_user(
                gradient, params, images[i * n : (i + 1) * n], labels[i * n : (i + 1) * n]
            )
            for i in range(self.users)
        ]
        if self.users == 1:
            return shares[0]
        return {name: torch.stack([s[name] for s in shares]).mean(dim=0) for name in params}

    def _one_user(
        self, gradient: ParamGradient, params: Params, images: torch.Tensor, labels: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        if self.local is None:
            return gradient(params, images, labels)
        current = dict(params)
        for rows in self.local.step_slices(images.shape[0]):
            step = gradient(current, images[rows], labels[rows])
            current = {name: current[name] - self.local.lr * step[name] for name in current}
        return {name: current[name] - params[name] for name in params}

    def describe(self) -> dict[str, object]:
        return {
            "users": self.users,
            "local_training": None if self.local is None else self.local.describe(),
        }
