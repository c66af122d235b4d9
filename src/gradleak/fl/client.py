"""What every federated client offers, and the computations the protocols' clients share."""

from __future__ import annotations

import copy
from typing import Protocol

import torch
from torch import nn
from torch.nn import functional as F

from gradleak.core.batch import PrivateBatch
from gradleak.core.update import SharedUpdate


class Client(Protocol):
    """A federated client: computes the update it shares from its private batch.

    Every client is created from the server's model and takes the server's current model
    the same way in every round: `compute_update(batch, server_model)`. Stateless clients
    (FedSGD, FedAvg) start each round from that model; stateful ones (FedADMM) keep their
    own variables and read the server's model as the new consensus. With `server_model`
    None the client goes on from the model it holds.
    """

    model: nn.Module  # the client's own model after its last update (Soteria reads it)
    server_model: nn.Module  # the server's model of its last round (DP-SGD restarts there)

    def compute_update(
        self, batch: PrivateBatch, server_model: nn.Module | None = None
    ) -> SharedUpdate: ...


def own_copy(server_model: nn.Module, model_mode: str) -> nn.Module:
    """The client's own copy of the server's model, in the client's batch-norm mode.

    The client trains the copy; the server's state, which the attacker holds, is untouched.
    """
    model = copy.deepcopy(server_model)
    model.train(model_mode == "train")
    return model


def client_gradient(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor
) -> dict[str, torch.Tensor]:
    """∇θ of the mean cross-entropy of `model` on (images, labels), by parameter name."""
    params = dict(model.named_parameters())
    loss = F.cross_entropy(model(images), labels)
    grads = torch.autograd.grad(loss, list(params.values()))
    return dict(zip(params, grads, strict=True))


def buffers_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's buffers (batch-norm running statistics), detached copies."""
    return {name: b.detach().clone() for name, b in model.named_buffers()}
