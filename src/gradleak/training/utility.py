"""What a defense costs: train a model with the defense on every step, measure accuracy.

Training is FedSGD with one client: on each step the client computes the gradient of its
batch, applies the defenses exactly as it would before sharing, and the model takes an SGD
step with the defended gradient. Same seed and budget for every defense setting.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn import functional as F

from gradleak.core.batch import PrivateBatch
from gradleak.core.errors import GradleakError
from gradleak.core.update import SharedUpdate, UpdateKind
from gradleak.data import ImageSource, load_bundled_cifar10, load_dataset
from gradleak.data.datasets import DATASETS
from gradleak.data.normalize import normalize
from gradleak.defenses import ClientView, apply_defenses, parse_defenses
from gradleak.models import build_model


@dataclass(frozen=True)
class UtilityConfig:
    """One training run. The first `train_count` images of `split` train, the next test."""

    model: str = "lenet"
    dataset: str = "mnist"
    data_root: Path | None = None
    split: str = "test"
    train_count: int = 8000
    test_count: int = 2000
    epochs: int = 3
    batch_size: int = 32
    lr: float = 0.1
    seed: int = 0
    defenses: tuple[str, ...] = ()
    delta: float = 1e-5  # for the (ε, δ) of DP-SGD

    def validate(self) -> UtilityConfig:
        for key in ("train_count", "test_count", "epochs", "batch_size"):
            if getattr(self, key) < 1:
                raise GradleakError(f"utility {key} must be at least 1, got {getattr(self, key)}")
        if not self.lr > 0:
            raise GradleakError(f"utility lr must be positive, got {self.lr}")
        if not 0 < self.delta < 1:
            raise GradleakError(f"utility delta must be in (0, 1), got {self.delta}")
        if self.dataset not in DATASETS:
            raise GradleakError(
                f"utility dataset {self.dataset!r} is not one of: {', '.join(DATASETS)}"
            )
        if self.batch_size > self.train_count:
            raise GradleakError(
                f"utility batch_size {self.batch_size} is larger than train_count "
                f"{self.train_count}"
            )
        spec = DATASETS[self.dataset]
        build_model(
            self.model,
            num_classes=spec.num_classes,
            in_channels=spec.channels,
            image_size=spec.image_size,
        )
        parse_defenses(self.defenses)
        return self


@dataclass
class UtilityResult:
    accuracy: float  # on the held-out images
    loss: float  # mean training loss over the last epoch
    steps: int
    seconds: float
    epsilon: float | None  # DP-SGD's ε at `delta`; None without DP-SGD
    delta: float | None


def open_utility_data(config: UtilityConfig) -> ImageSource:
    """The images a utility run trains and tests on (checked to be enough)."""
    if config.data_root is None and config.dataset == "cifar10" and config.split == "test":
        source = load_bundled_cifar10()  # the 8 bundled test images: enough for a smoke run
    else:
        source = load_dataset(config.dataset, config.data_root, config.split)
    total = config.train_count + config.test_count
    if total > len(source):
        raise GradleakError(
            f"{config.train_count} training + {config.test_count} test images need {total}, "
            f"but the {config.dataset} {config.split} split has {len(source)}"
        )
    return source


def train_with_defenses(config: UtilityConfig) -> UtilityResult:
    """Train with the defenses on every step and score test accuracy."""
    config = config.validate()
    spec = DATASETS[config.dataset]
    source = open_utility_data(config)
    total = config.train_count + config.test_count
    images = torch.stack([source[i][0] for i in range(total)])
    labels = torch.tensor([source[i][1] for i in range(total)])
    x = normalize(images, spec.mean, spec.std)
    train_x, test_x = x[: config.train_count], x[config.train_count :]
    train_y, test_y = labels[: config.train_count], labels[config.train_count :]
    channels, height, width = images.shape[1:]
    model = build_model(
        config.model,
        num_classes=spec.num_classes,
        in_channels=channels,
        image_size=(height, width),
        seed=config.seed,
    )
    defenses = parse_defenses(config.defenses)
    # Separate streams: the batch order must not depend on what a defense draws, so every
    # setting trains on the same batches.
    order_generator = torch.Generator().manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed + 1)
    params = dict(model.named_parameters())
    start = time.perf_counter()
    steps, losses = 0, []
    for _ in range(config.epochs):
        model.train()
        losses = []
        order = torch.randperm(config.train_count, generator=order_generator)
        for first in range(0, config.train_count, config.batch_size):
            index = order[first : first + config.batch_size]
            batch = PrivateBatch(train_x[index], train_y[index])
            loss = F.cross_entropy(model(batch.images), batch.labels)
            grads = torch.autograd.grad(loss, list(params.values()))
            update = SharedUpdate(
                {n: g.detach() for n, g in zip(params, grads, strict=True)},
                UpdateKind.GRADIENT,
                {"num_samples": len(batch)},
            )
            if defenses:
                update = apply_defenses(update, defenses, generator, ClientView(model, batch))
            with torch.no_grad():
                for name, p in params.items():
                    p.sub_(config.lr * update.tensors[name])
            losses.append(float(loss))
            steps += 1
    model.eval()
    with torch.no_grad():
        correct = sum(
            int((model(test_x[i : i + 500]).argmax(1) == test_y[i : i + 500]).sum())
            for i in range(0, config.test_count, 500)
        )
    epsilon = _epsilon(defenses, config, steps)
    return UtilityResult(
        accuracy=correct / config.test_count,
        loss=sum(losses) / max(1, len(losses)),
        steps=steps,
        seconds=time.perf_counter() - start,
        epsilon=epsilon,
        delta=config.delta if epsilon is not None else None,
    )


def _epsilon(defenses: list, config: UtilityConfig, steps: int) -> float | None:
    """ε spent by DP-SGD over the run (Opacus's RDP accountant), if DP-SGD was used."""
    from gradleak.defenses.dpsgd import DPSGD, dp_epsilon

    private = [d for d in defenses if isinstance(d, DPSGD)]
    if not private:
        return None
    sample_rate = config.batch_size / config.train_count
    return dp_epsilon(private[0].noise_multiplier, sample_rate, steps, config.delta)
