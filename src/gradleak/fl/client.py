"""FedSGD client: computes the gradient of its loss on a private batch and shares it."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from gradleak.fl.update import SharedUpdate, UpdateKind


@dataclass(frozen=True)
class PrivateBatch:
    """The client's data: normalised images B×C×H×W and integer labels. Never shared."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])


class FedSGDClient:
    """Shares the named-parameter gradient of mean cross-entropy on one private batch."""

    def __init__(self, server_model: nn.Module, *, model_mode: str = "train") -> None:
        # The client trains its own copy; the server's state is what the attacker holds.
        self.model = copy.deepcopy(server_model)
        self.model.train(model_mode == "train")
        self.model_mode = model_mode

    def compute_update(self, batch: PrivateBatch) -> SharedUpdate:
        params = dict(self.model.named_parameters())
        loss = F.cross_entropy(self.model(batch.images), batch.labels)
        grads = torch.autograd.grad(loss, list(params.values()))
        tensors = {name: g.detach() for name, g in zip(params, grads, strict=True)}
        return SharedUpdate(
            tensors,
            UpdateKind.GRADIENT,
            {"num_samples": len(batch), "protocol": "fedsgd"},
        )
