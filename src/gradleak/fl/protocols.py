"""Protocols by name, and one simulated round: every user's update, defended, aggregated."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from gradleak.errors import GradleakError
from gradleak.fl.aggregation import aggregate
from gradleak.fl.client import Client, FedSGDClient, PrivateBatch
from gradleak.fl.fedadmm import FedADMMClient
from gradleak.fl.fedavg import FedAvgClient
from gradleak.fl.local_training import LocalTraining
from gradleak.fl.update import SharedUpdate, UpdateKind


@dataclass(frozen=True)
class ProtocolSettings:
    """What the clients do: the protocol, its local training, users, ADMM's penalty."""

    name: str = "fedsgd"
    local: LocalTraining | None = None  # fedavg and fedadmm
    users: int = 1
    rho: float = 1.0  # fedadmm
    rounds: int = 1  # the attacked update is the last round's
    model_mode: str = "train"
    share_buffers: bool = False

    def __post_init__(self) -> None:
        if self.name not in PROTOCOLS:
            raise GradleakError(f"protocol {self.name!r} is not one of: {', '.join(PROTOCOLS)}")
        if self.users < 1:
            raise GradleakError(f"--users must be at least 1, got {self.users}")
        if not (self.rho > 0 and math.isfinite(self.rho)):
            raise GradleakError(f"ADMM penalty rho must be positive, got {self.rho}")
        if self.rounds < 1:
            raise GradleakError(f"rounds must be at least 1, got {self.rounds}")
        if self.rounds > 1 and self.name == "fedsgd":
            raise GradleakError(
                "several rounds need a protocol whose update moves the model; "
                "use --protocol fedavg or fedadmm"
            )
        if self.name != "fedsgd" and self.local is None:
            object.__setattr__(self, "local", LocalTraining(lr=DEFAULT_LOCAL_LR))

    def client(self, server_model: nn.Module) -> Client:
        return PROTOCOLS[self.name](server_model, self)

    def describe(self) -> dict[str, object]:
        return {
            "protocol": self.name,
            "users": self.users,
            "rounds": self.rounds,
            "local_training": None if self.local is None else self.local.describe(),
            "rho": self.rho if self.name == "fedadmm" else None,
            "client_model_mode": self.model_mode,
            "buffers_shared": self.share_buffers,
        }


DEFAULT_LOCAL_LR = 0.01

ClientFactory = Callable[[nn.Module, ProtocolSettings], Client]


def _fedsgd(model: nn.Module, s: ProtocolSettings) -> Client:
    return FedSGDClient(model, model_mode=s.model_mode, share_buffers=s.share_buffers)


def _fedavg(model: nn.Module, s: ProtocolSettings) -> Client:
    assert s.local is not None  # set in ProtocolSettings.__post_init__
    return FedAvgClient(model, s.local, model_mode=s.model_mode, share_buffers=s.share_buffers)


def _fedadmm(model: nn.Module, s: ProtocolSettings) -> Client:
    assert s.local is not None
    return FedADMMClient(
        model, s.local, rho=s.rho, model_mode=s.model_mode, share_buffers=s.share_buffers
    )


PROTOCOLS: dict[str, ClientFactory] = {
    "fedsgd": _fedsgd,
    "fedavg": _fedavg,
    "fedadmm": _fedadmm,
}

# A client-side step between computing and sharing (defenses): (update, client, batch).
Defend = Callable[[SharedUpdate, Client, PrivateBatch], SharedUpdate]


@dataclass
class RoundResult:
    """What the server holds when it attacks: its model and the (aggregated) update."""

    server_model: nn.Module
    update: SharedUpdate
    clients: list[Client]


def split_users(batch: PrivateBatch, users: int) -> list[PrivateBatch]:
    """User i holds samples [i·n, (i+1)·n) of the batch, n = len(batch) / users."""
    if users < 1 or len(batch) % users:
        raise GradleakError(
            f"{len(batch)} samples do not split evenly over {users} users; give each user "
            "the same number of samples"
        )
    n = len(batch) // users
    return [
        PrivateBatch(batch.images[i * n : (i + 1) * n], batch.labels[i * n : (i + 1) * n])
        for i in range(users)
    ]


def simulate(
    server_model: nn.Module,
    batch: PrivateBatch,
    settings: ProtocolSettings,
    defend: Defend | None = None,
) -> RoundResult:
    """Run `settings.rounds` rounds on the users' shares of `batch`; return the last one.

    Between rounds the server adds the mean update to its model (FedAvg's and FedADMM's
    server step), so the attacker of round r holds the model of round r.
    """
    batches = split_users(batch, settings.users)
    if settings.local is not None:
        settings.local.check(len(batches[0]))
    model = copy.deepcopy(server_model)
    clients = [settings.client(model) for _ in batches]
    for round_index in range(settings.rounds):
        if round_index and settings.name != "fedadmm":
            # FedAvg clients keep no state: each round they start from the server's model.
            clients = [settings.client(model) for _ in batches]
        updates = []
        for client, user_batch in zip(clients, batches, strict=True):
            if round_index and isinstance(client, FedADMMClient):
                update = client.compute_update(user_batch, model)
            else:
                update = client.compute_update(user_batch)
            updates.append(update if defend is None else defend(update, client, user_batch))
        shared = updates[0] if len(updates) == 1 else aggregate(updates)
        if round_index + 1 < settings.rounds:
            _apply(model, shared)
    return RoundResult(model, shared, clients)


def _apply(model: nn.Module, update: SharedUpdate) -> None:
    """The server's step: move its model by the (mean) weight difference."""
    if update.kind is UpdateKind.GRADIENT:  # excluded by ProtocolSettings
        raise GradleakError("a gradient update does not move the model by itself")
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(update.tensors[name])
        if update.buffers:
            for name, b in model.named_buffers():
                b.copy_(update.buffers[name])
