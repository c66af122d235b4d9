"""Simulated rounds: every user's update, defended and aggregated; rounds move the model."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from gradleak.core.batch import PrivateBatch
from gradleak.core.errors import GradleakError
from gradleak.core.update import SharedUpdate
from gradleak.fl.aggregation import aggregate
from gradleak.fl.client import Client
from gradleak.fl.protocols import ProtocolSettings, Step

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

    Every user is one client of the protocol, created once; in every round each client
    computes its update at the server's current model, defends it and shares it, and the
    server sees the mean. Between rounds the server moves its model by the mean update, so
    the attacker of round r holds the model of round r.

    Args:
        server_model: the server's initial model (not modified).
        batch: all users' private samples; user i holds the i-th equal share.
        settings: the protocol, its local training, users and rounds.
        defend: each client's defense, applied to its own update before sharing.

    Returns:
        The server's model of the last round, the (mean) update of that round, the clients.

    Raises:
        GradleakError: the batch does not split over the users, or a local mini-batch is
            larger than a user's samples.
    """
    batches = split_users(batch, settings.users)
    if settings.local is not None:
        settings.local.check(len(batches[0]))
    protocol = settings.protocol
    model = copy.deepcopy(server_model)
    clients = [settings.client(model) for _ in batches]
    for round_index in range(settings.rounds):
        updates = []
        for client, user_batch in zip(clients, batches, strict=True):
            update = client.compute_update(user_batch, model)
            updates.append(update if defend is None else defend(update, client, user_batch))
        shared = updates[0] if len(updates) == 1 else aggregate(updates)
        if round_index + 1 < settings.rounds:
            _apply(model, shared, protocol.step)
    return RoundResult(model, shared, clients)


def _apply(model: nn.Module, update: SharedUpdate, step: Step) -> None:
    """The server's step: move its model by the (mean) update; buffers are replaced."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            # Only protocols that move the model reach here: their step needs no rate.
            p.copy_(step(p, update.tensors[name], 0.0))
        if update.buffers:
            for name, b in model.named_buffers():
                b.copy_(update.buffers[name])
