"""The SGD loop every training run shares: seeded shuffled mini-batches, one optimiser step each.

An optional step transform sees each step's gradient as the `SharedUpdate` a FedSGD client
would send and returns the update the model steps with, so a defense can be trained
through exactly as it is applied before sharing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from gradleak.core.batch import PrivateBatch
from gradleak.core.update import SharedUpdate, UpdateKind

EVAL_BATCH = 500  # held-out images scored per forward pass

StepTransform = Callable[[SharedUpdate, PrivateBatch], SharedUpdate]


@dataclass
class EpochStats:
    """What one pass over the training images measured, batch by batch, in train mode."""

    epoch: int
    batch_losses: list[float] = field(default_factory=list)
    seen: int = 0  # images stepped on so far
    correct: int = 0  # of them, those whose logits ranked their label first
    loss_sum: float = 0.0  # Σ batch loss × batch size
    seconds: float = 0.0

    @property
    def steps(self) -> int:
        return len(self.batch_losses)

    @property
    def sample_loss(self) -> float:
        """Mean loss per image: every image weighs the same, whatever its batch's size."""
        return self.loss_sum / self.seen

    @property
    def batch_loss(self) -> float:
        """Mean of the batches' losses: every step weighs the same."""
        return sum(self.batch_losses) / max(1, self.steps)

    @property
    def accuracy(self) -> float:
        return self.correct / self.seen

    def add(self, loss: float, logits: Tensor, labels: Tensor) -> None:
        """Count one step: its mean loss and its batch's logits and labels."""
        self.batch_losses.append(loss)
        self.loss_sum += loss * len(labels)
        self.seen += len(labels)
        self.correct += int((logits.argmax(1) == labels).sum())


def sgd_epochs(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: Tensor,
    labels: Tensor,
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    transform: StepTransform | None = None,
    on_step: Callable[[EpochStats], None] | None = None,
) -> Iterator[EpochStats]:
    """Train `model` on cross-entropy with `optimizer`, yielding each epoch's statistics.

    Every epoch visits the images in a new random order drawn from a generator seeded with
    `seed` alone, so the batches do not depend on any other randomness (a defense's noise
    included). The model is in train mode while it trains.

    Args:
        model: the model to train; its parameters are the ones `optimizer` steps.
        optimizer: steps the parameters from the gradients this loop sets on them.
        images: the normalised training images N×C×H×W.
        labels: their N integer labels.
        epochs: passes over the images.
        batch_size: images per step; the last batch of an epoch may be smaller.
        seed: seeds the batch order.
        transform: maps each step's gradient, as the update a FedSGD client would share
            for the batch, to the update the model steps with.
        on_step: called after every step with the epoch's statistics so far.

    Yields:
        The statistics of each epoch, after its last step.
    """
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    order = torch.Generator().manual_seed(seed)
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        stats = EpochStats(epoch)
        model.train()
        permutation = torch.randperm(len(labels), generator=order)
        for first in range(0, len(permutation), batch_size):
            index = permutation[first : first + batch_size]
            batch = PrivateBatch(images[index], labels[index])
            logits = model(batch.images)
            loss = F.cross_entropy(logits, batch.labels)
            _step(optimizer, params, _gradient(loss, params, batch, transform))
            stats.add(float(loss.detach()), logits.detach(), batch.labels)
            if on_step is not None:
                on_step(stats)
        stats.seconds = time.perf_counter() - start
        yield stats


def _gradient(
    loss: Tensor,
    params: dict[str, nn.Parameter],
    batch: PrivateBatch,
    transform: StepTransform | None,
) -> dict[str, Tensor]:
    """The gradient of `loss` by parameter name, through `transform` when one is given."""
    grads = torch.autograd.grad(loss, list(params.values()))
    gradient = {name: g.detach() for name, g in zip(params, grads, strict=True)}
    if transform is None:
        return gradient
    update = SharedUpdate(gradient, UpdateKind.GRADIENT, {"num_samples": len(batch)})
    return dict(transform(update, batch).tensors)


def _step(
    optimizer: torch.optim.Optimizer, params: dict[str, nn.Parameter], gradient: dict[str, Tensor]
) -> None:
    for name, p in params.items():
        p.grad = gradient[name]
    optimizer.step()


def accuracy(model: nn.Module, images: Tensor, labels: Tensor) -> float | None:
    """Top-1 accuracy in eval mode (batch-norm running statistics); None with no images.

    The model is left in the mode it was in.
    """
    if len(labels) == 0:
        return None
    was_training = model.training
    model.eval()
    with torch.no_grad():
        correct = sum(
            int((model(images[i : i + EVAL_BATCH]).argmax(1) == labels[i : i + EVAL_BATCH]).sum())
            for i in range(0, len(labels), EVAL_BATCH)
        )
    model.train(was_training)
    return correct / len(labels)
