"""The gradient-matching problem as a pure function of a candidate batch (torch.func)."""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import nn
from torch.func import functional_call, grad, replace_all_batch_norm_modules_
from torch.nn import functional as F

from gradleak.attacks.objectives import Objective
from gradleak.attacks.priors import total_variation


def label_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy against integer labels, or against softmax(labels) for soft logits."""
    if labels.dtype == torch.long:
        return F.cross_entropy(logits, labels)
    return -(labels.softmax(dim=-1) * logits.log_softmax(dim=-1)).sum(dim=-1).mean()


def attacker_model(server_model: nn.Module, model_mode: str) -> nn.Module:
    """The attacker's replica of the server's model, in the client's batch-norm mode.

    In train mode batch norm normalises with batch statistics; without running-stat
    updates the forward pass is a pure function, which vmap needs.
    """
    replica = copy.deepcopy(server_model)
    for p in replica.parameters():
        p.requires_grad_(False)
    if model_mode == "train":
        replace_all_batch_norm_modules_(replica)
        replica.train()
    else:
        replica.eval()
    return replica


class MatchingProblem:
    """loss(x, labels) = objective(∇θ ℓ(f(x), labels), shared) + tv_weight · TV(x)."""

    def __init__(
        self,
        model: nn.Module,
        target: Mapping[str, torch.Tensor],
        objective: Objective,
        tv_weight: float = 0.0,
    ) -> None:
        self.model = model
        self.params = {n: p.detach() for n, p in model.named_parameters()}
        self.buffers = {n: b.detach() for n, b in model.named_buffers()}
        self.target = {n: target[n].detach() for n in self.params}
        self.objective = objective
        self.tv_weight = float(tv_weight)

    def candidate_gradient(
        self, images: torch.Tensor, labels: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        def client_loss(params: dict[str, torch.Tensor]) -> torch.Tensor:
            logits = functional_call(self.model, (params, self.buffers), (images,))
            return label_loss(logits, labels)

        return grad(client_loss)(self.params)

    def loss(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        value = self.objective(self.candidate_gradient(images, labels), self.target)
        if self.tv_weight:
            value = value + self.tv_weight * total_variation(images)
        return value
