"""FedADMM client: local primal steps on the augmented Lagrangian, a dual step, and the
increment of x + π/ρ as the shared update.

With the global model z, the client's primal variable x (starts at z) and dual variable
π (starts at 0), one round is

    for each local step s:  x ← x − η (∇f(x; batch_s) + π + ρ (x − z))
    π ← π + ρ (x − z)
    share Δ = (x + π/ρ) − (x_before + π_before/ρ)

and the server moves z by the mean Δ. The client keeps x and π between rounds.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn
from torch.nn import functional as F

from gradleak.core.batch import PrivateBatch
from gradleak.core.errors import GradleakError
from gradleak.core.update import SharedUpdate, UpdateKind
from gradleak.fl.client import buffers_of
from gradleak.fl.local_training import LocalTraining


class FedADMMClient:
    """One FedADMM client; `compute_update` runs one round against the given global model."""

    def __init__(
        self,
        server_model: nn.Module,
        local: LocalTraining,
        *,
        rho: float = 1.0,
        model_mode: str = "train",
        share_buffers: bool = False,
    ) -> None:
        if not (rho > 0 and math.isfinite(rho)):
            raise GradleakError(f"ADMM penalty rho must be positive, got {rho}")
        self.local = local
        self.rho = float(rho)
        self.model_mode = model_mode
        self.share_buffers = share_buffers
        self.model = copy.deepcopy(server_model)
        self.model.train(model_mode == "train")
        self.dual = {n: torch.zeros_like(p) for n, p in self.model.named_parameters()}
        self.global_params = {n: p.detach().clone() for n, p in server_model.named_parameters()}

    def compute_update(
        self, batch: PrivateBatch, global_model: nn.Module | None = None
    ) -> SharedUpdate:
        """One round; `global_model` is the server's current z (None: keep the last one)."""
        if global_model is not None:
            self.global_params = {n: p.detach().clone() for n, p in global_model.named_parameters()}
            own = dict(self.model.named_buffers())
            for name, buffer in global_model.named_buffers():  # buffers follow the server's
                own[name].copy_(buffer)
        z = self.global_params
        before = self._shared_variable()
        params = dict(self.model.named_parameters())
        for rows in self.local.step_slices(len(batch)):
            loss = F.cross_entropy(self.model(batch.images[rows]), batch.labels[rows])
            grads = torch.autograd.grad(loss, list(params.values()))
            with torch.no_grad():
                for (name, p), g in zip(params.items(), grads, strict=True):
                    p.sub_(self.local.lr * (g + self.dual[name] + self.rho * (p - z[name])))
        with torch.no_grad():
            for name, p in params.items():
                self.dual[name] += self.rho * (p - z[name])
        after = self._shared_variable()
        return SharedUpdate(
            {n: after[n] - before[n] for n in after},
            UpdateKind.ADMM_INCREMENT,
            {"num_samples": len(batch), "protocol": "fedadmm", "rho": self.rho},
            buffers=buffers_of(self.model) if self.share_buffers else {},
        )

    def _shared_variable(self) -> dict[str, torch.Tensor]:
        """x + π/ρ, the quantity whose increments the client shares."""
        return {n: p.detach() + self.dual[n] / self.rho for n, p in self.model.named_parameters()}
