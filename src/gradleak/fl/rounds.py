"""Simulated rounds: every user's update, defended and aggregated; rounds move the model."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from gradleak.core.batch import PrivateBatch
from gradleak.core.errors import GradleakError
from gradleak.core.update import SharedUpdate, UpdateKind
from gradleak.fl.aggregation import aggregate
from gradleak.fl.client import Client
from gradleak.fl.fedadmm import FedADMMClient
from gradleak.fl.protocols import ProtocolSettings

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
