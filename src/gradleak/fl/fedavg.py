"""FedAvg client: trains locally with SGD, then shares the weight difference."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F

from gradleak.core.batch import PrivateBatch
from gradleak.core.update import SharedUpdate, UpdateKind
from gradleak.fl.client import buffers_of
from gradleak.fl.local_training import LocalTraining


class FedAvgClient:
    """Shares θ_local − θ_server after `local` training on its private samples."""

    def __init__(
        self,
        server_model: nn.Module,
        local: LocalTraining,
        *,
        model_mode: str = "train",
        share_buffers: bool = False,
    ) -> None:
        self.server_model = server_model
        self.local = local
        self.model_mode = model_mode
        self.share_buffers = share_buffers
        self.model = copy.deepcopy(server_model)
        self.model.train(model_mode == "train")

    def compute_update(self, batch: PrivateBatch) -> SharedUpdate:
        # Every round starts from the server's state.
        self.model = copy.deepcopy(self.server_model)
        self.model.train(self.model_mode == "train")
        start = {n: p.detach().clone() for n, p in self.model.named_parameters()}
        params = list(self.model.parameters())
        for rows in self.local.step_slices(len(batch)):
            loss = F.cross_entropy(self.model(batch.images[rows]), batch.labels[rows])
            grads = torch.autograd.grad(loss, params)
            with torch.no_grad():
                for p, g in zip(params, grads, strict=True):
                    p.sub_(self.local.lr * g)
        delta = {n: p.detach() - start[n] for n, p in self.model.named_parameters()}
        return SharedUpdate(
            delta,
            UpdateKind.WEIGHT_DELTA,
            {"num_samples": len(batch), "protocol": "fedavg"},
            buffers=buffers_of(self.model) if self.share_buffers else {},
        )
