"""What a defense costs: train a model with the defense on every step, measure accuracy.

Training is FedSGD with one client: on each step the client computes the gradient of its
batch, applies the defenses exactly as it would before sharing, and the model takes an SGD
step with the defended gradient. Same seed and budget for every defense setting.

A setting whose defenses run a DP mechanism (DP-SGD) trains on Poisson-sampled batches:
each image is in each step's batch independently with probability q = batch_size /
train_count, as the accountant's analysis assumes, and DP-SGD averages over the expected
batch size q·N. Its ε is the accountant's for every mechanism of the chain at every step
(`defenses.accounting.privacy_spent`). Other settings train on shuffled batches.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from gradleak.core.batch import PrivateBatch
from gradleak.core.device import CPU
from gradleak.core.errors import GradleakError
from gradleak.core.update import SharedUpdate
from gradleak.data import DATASETS, LoadedImages, open_images
from gradleak.defenses import (
    ClientView,
    Defense,
    apply_defenses,
    dp_mechanisms,
    parse_defenses,
    privacy_spent,
)
from gradleak.models import build_model
from gradleak.training.sgd import Sampling, StepTransform, accuracy, poisson_rate, sgd_epochs


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
    loss: float  # mean training loss over the last epoch's non-empty batches
    steps: int
    seconds: float
    epsilon: float | None  # DP-SGD's ε at `delta`; None without DP-SGD
    delta: float | None
    sampling: str  # "poisson" (with DP-SGD) or "shuffled": how the batches were drawn
    sample_rate: float | None  # q, the chance an image is in a Poisson batch; None if shuffled


def open_utility_data(config: UtilityConfig) -> LoadedImages:
    """The images a utility run trains and tests on, checked to be enough.

    Raises:
        GradleakError: if the data cannot be read or holds fewer than train + test images.
    """
    images = open_images(config.dataset, config.data_root, config.split)
    total = config.train_count + config.test_count
    if total > len(images):
        raise GradleakError(
            f"{config.train_count} training + {config.test_count} test images need {total}, "
            f"but the {config.dataset} {config.split} split has {len(images)}"
        )
    return images


def train_with_defenses(config: UtilityConfig, *, device: torch.device = CPU) -> UtilityResult:
    """Train with the defenses on every step and score test accuracy.

    Args:
        config: the run; the first `train_count` images of the split train, the next
            `test_count` are scored.
        device: where the model and images go (built and seeded on the CPU, moved once;
            the defenses' noise and the batches are drawn on the CPU, so a seed gives the
            same numbers on any device up to float rounding).

    Returns:
        Test accuracy, the last epoch's mean batch loss, the number of steps, the time
        taken, DP-SGD's (ε, δ) when DP-SGD is among the defenses, and how the batches
        were sampled (Poisson, with its q, when it is; shuffled otherwise).

    Raises:
        GradleakError: if a setting is invalid or the data cannot be read or is too small.
    """
    config = config.validate()
    images = open_utility_data(config)
    train_x, train_y = images.normalized(range(config.train_count))
    total = config.train_count + config.test_count
    test_x, test_y = images.normalized(range(config.train_count, total))
    model = build_model(
        config.model,
        num_classes=images.num_classes,
        in_channels=images.channels,
        image_size=images.size,
        seed=config.seed,
    ).to(device)
    train_x, train_y = train_x.to(device), train_y.to(device)
    test_x, test_y = test_x.to(device), test_y.to(device)
    defenses = parse_defenses(config.defenses)
    mechanisms = dp_mechanisms(defenses)
    # The accountant's guarantee holds for Poisson-sampled batches only.
    sampling = Sampling.POISSON if mechanisms else Sampling.SHUFFLED
    rate = poisson_rate(config.train_count, config.batch_size)
    expected = config.batch_size if mechanisms else None
    # Its own generator, apart from the one that draws the batches: every setting of one
    # sampling trains on the same batches, whatever its defenses draw.
    generator = torch.Generator().manual_seed(config.seed + 1)
    start = time.perf_counter()
    epochs = list(
        sgd_epochs(
            model,
            torch.optim.SGD(model.parameters(), lr=config.lr),
            train_x,
            train_y,
            epochs=config.epochs,
            batch_size=config.batch_size,
            seed=config.seed,
            transform=_defend(model, defenses, generator, expected) if defenses else None,
            sampling=sampling,
        )
    )
    score = accuracy(model, test_x, test_y)
    assert score is not None  # validate() asks for at least one test image
    steps = sum(e.steps for e in epochs)
    epsilon = privacy_spent(mechanisms, rate, steps, config.delta)
    return UtilityResult(
        accuracy=score,
        loss=epochs[-1].batch_loss,
        steps=steps,
        seconds=time.perf_counter() - start,
        epsilon=epsilon,
        delta=config.delta if epsilon is not None else None,
        sampling=sampling.value,
        sample_rate=rate if sampling is Sampling.POISSON else None,
    )


def _defend(
    model: nn.Module,
    defenses: list[Defense],
    generator: torch.Generator,
    expected_batch_size: int | None,
) -> StepTransform:
    """A step transform applying `defenses` as the client does before sharing its update."""

    def transform(update: SharedUpdate, batch: PrivateBatch) -> SharedUpdate:
        client = ClientView(model, batch, expected_batch_size)
        return apply_defenses(update, defenses, generator, client)

    return transform
