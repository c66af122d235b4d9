"""FedSGD client: computes the gradient of its loss on a private batch and shares it."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F

from gradleak.core.batch import PrivateBatch
from gradleak.core.update import SharedUpdate, UpdateKind
from gradleak.fl.client import buffers_of


class FedSGDClient:
    """Shares the named-parameter gradient of mean cross-entropy on one private batch.

    In train mode the forward pass also moves the batch-norm running statistics; with
    `share_buffers` the client sends them along (as FedAvg-style systems often do).
    """

    def __init__(
        self, server_model: nn.Module, *, model_mode: str = "train", share_buffers: bool = False
    ) -> None:
        # The client trains its own copy; the server's state is what the attacker holds.
        self.model = copy.deepcopy(server_model)
        self.model.train(model_mode == "train")
        self.model_mode = model_mode
        self.share_buffers = share_buffers

    def compute_update(self, batch: PrivateBatch) -> SharedUpdate:
        params = dict(self.model.named_parameters())
        loss = F.cross_entropy(self.model(batch.images), batch.labels)
        grads = torch.autograd.grad(loss, list(params.values()))
        tensors = {name: g.detach() for name, g in zip(params, grads, strict=True)}
        return SharedUpdate(
            tensors,
            UpdateKind.GRADIENT,
            {"num_samples": len(batch), "protocol": "fedsgd"},
            buffers=buffers_of(self.model) if self.share_buffers else {},
        )
