"""How a client trains locally before sharing: steps or epochs, batch size, learning rate.

The same description drives the client's real training and the attacker's replay of it,
so both walk the private samples in the same order: mini-batches of `batch_size`
consecutive samples, cycling through the data, one SGD step per mini-batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from gradleak.core.batch import PrivateBatch
from gradleak.core.errors import GradleakError
from gradleak.fl.client import client_gradient


@dataclass(frozen=True)
class LocalTraining:
    """Plain SGD for `steps` steps or `epochs` passes; `batch_size` None means all samples."""

    lr: float
    steps: int | None = None
    epochs: int | None = None
    batch_size: int | None = None

    def __post_init__(self) -> None:
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise GradleakError(f"local learning rate must be positive, got {self.lr}")
        if self.steps is not None and self.epochs is not None:
            raise GradleakError("give local steps or local epochs, not both")
        for key in ("steps", "epochs", "batch_size"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise GradleakError(
                    f"local {key.replace('_', ' ')} must be at least 1, got {value}"
                )

    def check(self, num_samples: int, flag: str = "--local-batch-size") -> None:
        """Refuse settings the client's data cannot support (`flag` names the fix)."""
        if self.batch_size is not None and self.batch_size > num_samples:
            raise GradleakError(
                f"local batch size {self.batch_size} is larger than the client's "
                f"{num_samples} samples; use {flag} {num_samples} or fewer"
            )

    def batch_of(self, num_samples: int) -> int:
        return num_samples if self.batch_size is None else self.batch_size

    def step_slices(self, num_samples: int) -> list[slice]:
        """The samples each local step uses, in order."""
        self.check(num_samples)
        size = self.batch_of(num_samples)
        per_epoch = math.ceil(num_samples / size)
        batches = [slice(i * size, min((i + 1) * size, num_samples)) for i in range(per_epoch)]
        if self.epochs is not None:
            return batches * self.epochs
        steps = 1 if self.steps is None else self.steps
        return [batches[s % per_epoch] for s in range(steps)]

    def describe(self) -> dict[str, object]:
        return {
            "lr": self.lr,
            "steps": self.steps,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
        }


# The direction a local step descends for parameter `name` at `param` given its loss gradient
# (FedADMM adds its dual and penalty terms); None: the plain gradient.
StepDirection = Callable[[str, torch.Tensor, torch.Tensor], torch.Tensor]
# The loss gradient of one local step, by parameter name, given the model and the step's
# mini-batch (DP-SGD's clipped, noised one); None: `client_gradient`, the plain mean.
StepGradient = Callable[[nn.Module, torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]


def local_sgd(
    model: nn.Module,
    batch: PrivateBatch,
    local: LocalTraining,
    direction: StepDirection | None = None,
    gradient: StepGradient | None = None,
) -> None:
    """Train `model` in place: one SGD step of size `local.lr` per mini-batch of `local`.

    Args:
        model: the client's own model, in its batch-norm mode.
        batch: the client's private samples, walked in order (`local.step_slices`).
        local: the local training.
        direction: what each step descends instead of the plain loss gradient.
        gradient: each step's loss gradient instead of `client_gradient`'s (DP-SGD).
    """
    params = dict(model.named_parameters())
    step_gradient = client_gradient if gradient is None else gradient
    for rows in local.step_slices(len(batch)):
        grads = step_gradient(model, batch.images[rows], batch.labels[rows])
        with torch.no_grad():
            for name, p in params.items():
                step = grads[name] if direction is None else direction(name, p, grads[name])
                p.sub_(local.lr * step)
