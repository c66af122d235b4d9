"""The SGD loop every training run shares: seeded mini-batches, one optimiser step each.

An optional step transform sees each step's gradient as the `SharedUpdate` a FedSGD client
would send and returns the update the model steps with, so a defense can be trained
through exactly as it is applied before sharing.

Batches are drawn one of two ways (`Sampling`). Shuffled: every epoch visits each image
once, in a new random order, `batch_size` at a time. Poisson: every epoch takes
ceil(N / batch_size) steps, and each image is in each step's batch independently with
probability q = batch_size / N, so batches vary in size (q·N on average) and may be empty.
DP-SGD's accountant assumes Poisson sampling; its guarantee holds only for training that
samples so.
"""

from __future__ import annotations

import enum
import math
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


class Sampling(str, enum.Enum):
    """How an epoch draws its batches (see the top of this module)."""

    SHUFFLED = "shuffled"
    POISSON = "poisson"


# One epoch's batches as index tensors, given (image count, batch size, generator).
BatchDraw = Callable[[int, int, torch.Generator], Iterator[Tensor]]


def _shuffled(count: int, batch_size: int, generator: torch.Generator) -> Iterator[Tensor]:
    permutation = torch.randperm(count, generator=generator, device=generator.device)
    for first in range(0, count, batch_size):
        yield permutation[first : first + batch_size]


def _poisson(count: int, batch_size: int, generator: torch.Generator) -> Iterator[Tensor]:
    # The draw of Opacus's UniformWithReplacementSampler (its DPDataLoader's): one uniform
    # number per image and step, the image in the batch when it falls below q.
    rate = poisson_rate(count, batch_size)
    for _ in range(math.ceil(count / batch_size)):
        draw = torch.rand(count, generator=generator, device=generator.device)
        yield torch.nonzero(draw < rate).flatten()


def poisson_rate(count: int, batch_size: int) -> float:
    """q, the probability that an image is in a Poisson-sampled batch: batch_size / count."""
    return batch_size / count


BATCHES: dict[Sampling, BatchDraw] = {
    Sampling.SHUFFLED: _shuffled,
    Sampling.POISSON: _poisson,
}


@dataclass
class EpochStats:
    """What one pass over the training images measured, batch by batch, in train mode."""

    epoch: int
    batch_losses: list[float] = field(default_factory=list)  # of the non-empty batches
    seen: int = 0  # images stepped on so far
    correct: int = 0  # of them, those whose logits ranked their label first
    loss_sum: float = 0.0  # Σ batch loss × batch size
    seconds: float = 0.0
    steps: int = 0  # optimiser steps, an empty Poisson batch's included

    @property
    def sample_loss(self) -> float:
        """Mean loss per image: every image weighs the same, whatever its batch's size."""
        return self.loss_sum / self.seen if self.seen else math.nan

    @property
    def batch_loss(self) -> float:
        """Mean of the non-empty batches' losses: every such step weighs the same."""
        return sum(self.batch_losses) / len(self.batch_losses) if self.batch_losses else math.nan

    @property
    def accuracy(self) -> float:
        return self.correct / self.seen if self.seen else math.nan

    def add(self, loss: float, logits: Tensor, labels: Tensor) -> None:
        """Count one step: its mean loss and its batch's logits and labels."""
        self.steps += 1
        self.batch_losses.append(loss)
        self.loss_sum += loss * len(labels)
        self.seen += len(labels)
        self.correct += int((logits.argmax(1) == labels).sum())

    def add_empty(self) -> None:
        """Count one step on an empty batch: it has no loss, but the model stepped."""
        self.steps += 1


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
    sampling: Sampling = Sampling.SHUFFLED,
) -> Iterator[EpochStats]:
    """Train `model` on cross-entropy with `optimizer`, yielding each epoch's statistics.

    Every epoch draws its batches (`sampling`) from a generator seeded with `seed` alone,
    so the batches do not depend on any other randomness (a defense's noise included). The
    model is in train mode while it trains. An empty batch (Poisson sampling) has a zero
    gradient, which `transform` still sees, and the model steps with what it returns.

    Args:
        model: the model to train; its parameters are the ones `optimizer` steps.
        optimizer: steps the parameters from the gradients this loop sets on them.
        images: the normalised training images N×C×H×W.
        labels: their N integer labels.
        epochs: passes over the images.
        batch_size: images per step: exactly, but for an epoch's last batch, when
            shuffled; on average when Poisson-sampled.
        seed: seeds the batches.
        transform: maps each step's gradient, as the update a FedSGD client would share
            for the batch, to the update the model steps with.
        on_step: called after every step with the epoch's statistics so far.
        sampling: shuffled (the default) or Poisson-sampled batches.

    Yields:
        The statistics of each epoch, after its last step.
    """
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    order = torch.Generator().manual_seed(seed)
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        stats = EpochStats(epoch)
        model.train()
        for index in _epoch_batches(BATCHES[sampling], len(labels), batch_size, order, images):
            batch = PrivateBatch(images[index], labels[index])
            if len(batch):
                logits = model(batch.images)
                loss = F.cross_entropy(logits, batch.labels)
                gradient = _gradient(loss, params)
                stats.add(float(loss.detach()), logits.detach(), batch.labels)
            else:
                gradient = {name: torch.zeros_like(p.detach()) for name, p in params.items()}
                stats.add_empty()
            _step(optimizer, params, _transformed(gradient, batch, transform))
            if on_step is not None:
                on_step(stats)
        stats.seconds = time.perf_counter() - start
        yield stats


def _epoch_batches(
    draw: BatchDraw, count: int, batch_size: int, generator: torch.Generator, images: Tensor
) -> list[Tensor]:
    """One epoch's batches, drawn on the (CPU) generator, moved to the images' device at once:
    one copy per epoch rather than one per step (on a GPU each copy waits for the device)."""
    batches = list(draw(count, batch_size, generator))
    if images.device == generator.device or not batches:
        return batches
    sizes = [len(index) for index in batches]
    return list(torch.cat(batches).to(images.device).split(sizes))


def _gradient(loss: Tensor, params: dict[str, nn.Parameter]) -> dict[str, Tensor]:
    """The gradient of `loss` by parameter name."""
    grads = torch.autograd.grad(loss, list(params.values()))
    return {name: g.detach() for name, g in zip(params, grads, strict=True)}


def _transformed(
    gradient: dict[str, Tensor], batch: PrivateBatch, transform: StepTransform | None
) -> dict[str, Tensor]:
    """`gradient` through `transform`, as the update a FedSGD client shares for `batch`."""
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
