"""Train a generative image prior (a VAE's decoder or a DCGAN's generator) on public images.

The prior stands for the attacker's knowledge of what images look like (GGL, GIAS): it is
trained on images the attacked ones are not among. By default that is images 100-599 of
the split for the indexed datasets (cifar10, cifar100, mnist), whose first 100 images are
the ones attacks are scored on by convention, and every image of an image folder.

Training runs on the CPU, one process, deterministic for a seed (model initialisation,
batch order, flips and noise all come from it). Photos are augmented with mirrored copies
(each image flipped with probability 1/2 each time it is drawn); digits are not. The
default length is 800 steps, whatever the number of images. After every epoch the prior
is saved at `out`, replacing the file whole, so an interrupted training (Ctrl-C, SIGTERM)
keeps its last completed epoch; a picture of 16 samples beside it (NAME.samples.png),
redrawn every 10 seconds and after the last epoch, shows how far it has come.

The two kinds:

- vae: an encoder and the generator as its decoder, trained on the negative evidence
  lower bound per image: Bernoulli reconstruction (binary cross-entropy summed over
  pixels) plus `kl_weight` times the KL divergence to the standard normal (β = 1, the
  plain VAE: its decoder is then trained on codes from the prior that attacks draw from).
  Adam at 1e-3. Stable on a few hundred images; samples are blurry.
- dcgan: the generator against a `Discriminator`, non-saturating logistic losses, Adam
  at 2e-4 with betas (0.5, 0.999) as in Radford et al. 2016, real labels smoothed to 0.9
  (a discriminator that memorises a few hundred images would otherwise starve the
  generator of gradient).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from gradleak import __version__
from gradleak.attacks.priors.generative import (
    MAX_KEPT_IMAGES,
    Discriminator,
    Encoder,
    GenerativePrior,
    Generator,
    check_side,
    save_generative_prior,
)
from gradleak.core.device import CPU
from gradleak.core.errors import GradleakError
from gradleak.core.files import check_out_file
from gradleak.core.settings import require_counts, require_seed
from gradleak.core.signals import hold_interrupts, release_interrupts
from gradleak.data import input_shape, open_images
from gradleak.data.loading import FILE_DATASETS, FOLDER
from gradleak.report.images import save_png, tile_rows, to_pil
from gradleak.scenario.config import DATASET_CHOICES, SPLITS
from gradleak.training.auxiliary import auxiliary_range

PRIOR_SUFFIXES = (".pt", ".pth")
# Indexed datasets are attacked on their first 100 images by convention; a prior trained
# by default starts after them. 599 is the last CIFAR test image in the shared data; a
# full download has more, and the default stays the same 500 images.
# Photos look as natural mirrored; digits (and text) do not.
_FLIPS_BY_DEFAULT = {"mnist": False}
SAMPLE_ROWS, SAMPLE_COLUMNS = 2, 8  # the samples picture: 16 images
PICTURE_EVERY_S = 10.0  # how often the samples picture is redrawn during training


@dataclass(frozen=True)
class _Kind:
    """How one kind trains by default: its Adam settings and its length in steps."""

    lr: float
    betas: tuple[float, float]
    steps: int


# The default length is a number of steps, so a small set (60 faces: one batch) trains as
# long as a larger one: 800 steps are 100 epochs of CIFAR-10 images 100-599 at batch 64,
# about 3 minutes on one CPU thread, where the VAE's loss has flattened out (DESIGN.md).
_KINDS: dict[str, _Kind] = {
    "vae": _Kind(lr=1e-3, betas=(0.9, 0.999), steps=800),
    "dcgan": _Kind(lr=2e-4, betas=(0.5, 0.999), steps=800),
}


@dataclass(frozen=True)
class PriorTrainConfig:
    """One training of a generative prior.

    Attributes:
        kind: "vae" or "dcgan" (`GENERATIVE_KINDS`).
        dataset: cifar10, cifar100, mnist or folder.
        data_root: the folder holding the dataset (required).
        split: the split of an indexed dataset ("test"; folders have only "test").
        index_range: images A..B of the split, both included. None: 100-599 for the
            indexed datasets (their first 100 are the attacked ones by convention), every
            image of a folder.
        image_size: side of folder images (default 32); a multiple of 4.
        latent_dim: length of the latent code. 64: enough for the coarse layout and
            colours that a generator trained on hundreds of images can learn, and half the
            parameters of 128 in the generator's first layer (faster on a CPU).
        width: channels of the networks' middle layers.
        epochs: passes over the images; None: enough for the kind's default number of
            steps (800: 100 epochs of 500 images at batch 64, 800 of 60 images).
        batch_size: images per step (the last batch of an epoch may be smaller).
        lr: Adam's step size; None: the kind's (vae 1e-3, dcgan 2e-4).
        seed: initialisation, batch order, flips and noise.
        augment: add horizontal flips (each image flipped with probability 1/2); None:
            for photos, not for mnist (a mirrored digit is no digit).
        kl_weight: vae: β, the weight of the KL term (1: the plain VAE).
    """

    kind: str = "vae"
    dataset: str = "cifar10"
    data_root: Path | None = None
    split: str = "test"
    index_range: tuple[int, int] | None = None
    image_size: int | None = None
    latent_dim: int = 64
    width: int = 64
    epochs: int | None = None
    batch_size: int = 64
    lr: float | None = None
    seed: int = 0
    augment: bool | None = None
    kl_weight: float = 1.0

    def validate(self, dataset_size: int | None = None) -> PriorTrainConfig:
        """Check every setting; with `dataset_size`, also that the range lies in the split.

        Returns:
            The config itself.

        Raises:
            GradleakError: one line naming the setting and what it may be.
        """
        if self.kind not in _KINDS:
            raise GradleakError(
                f"unknown prior kind {self.kind!r}; choose one of: {', '.join(_KINDS)}"
            )
        if self.dataset not in DATASET_CHOICES:
            raise GradleakError(
                f"unknown dataset {self.dataset!r} for a prior; choose one of: "
                f"{', '.join(DATASET_CHOICES)}"
            )
        if self.data_root is None:
            raise GradleakError(
                "a prior is trained on images read from disk: pass --data-root DIR (e.g. the "
                "folder holding cifar-10-batches-py/, or an image folder)"
            )
        if self.split not in SPLITS:
            raise GradleakError(f"unknown split {self.split!r}; choose one of: {', '.join(SPLITS)}")
        require_counts(self, ("latent_dim", "width", "epochs", "batch_size"))
        if self.width < 2:
            raise GradleakError(f"width must be at least 2, got {self.width}")
        require_seed(self.seed)
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise GradleakError(f"lr must be a positive number, got {self.lr}")
        if not (math.isfinite(self.kl_weight) and self.kl_weight >= 0):
            raise GradleakError(f"kl_weight must be 0 or more, got {self.kl_weight}")
        if self.image_size is not None and self.dataset not in FILE_DATASETS:
            raise GradleakError(
                f"{self.dataset} images keep their own size; drop --image-size or use "
                "--dataset folder, list or tensors"
            )
        channels, size, _ = self.data_shape()
        check_side(size, channels)
        self._check_range(dataset_size)
        return self

    def _check_range(self, size: int | None) -> None:
        if self.index_range is not None:
            first, last = self.index_range
            if not 0 <= first <= last:
                raise GradleakError(
                    f"range {first}-{last} is not A-B with 0 <= A <= B; give e.g. 100-599"
                )
        if size is None:
            return
        self.resolved_range(size)  # refuses a range past the split

    def resolved_range(self, dataset_size: int) -> tuple[int, int]:
        """The images trained on, both ends included (the default made concrete)."""
        where = f"the {self.dataset} {self.split} split"
        if self.dataset in FILE_DATASETS:
            where = "the folder" if self.dataset == FOLDER else "the file"
        return auxiliary_range(self.dataset, dataset_size, self.index_range, where)

    def data_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images trained on."""
        channels, (height, width) = input_shape(self.dataset, self.image_size)
        return channels, height, width

    def resolved_epochs(self, images: int) -> int:
        """Passes over `images` training images: `epochs`, or the default steps' worth."""
        if self.epochs is not None:
            return self.epochs
        return math.ceil(_KINDS[self.kind].steps / math.ceil(images / self.batch_size))

    @property
    def flips(self) -> bool:
        """Whether training adds mirrored images: `augment`, or the dataset's default."""
        if self.augment is not None:
            return self.augment
        return _FLIPS_BY_DEFAULT.get(self.dataset, True)

    @property
    def resolved_lr(self) -> float:
        return self.lr if self.lr is not None else _KINDS[self.kind].lr


@dataclass(frozen=True)
class EpochLoss:
    """One epoch's losses, averaged over its images.

    Attributes:
        epoch: 1-based.
        loss: what the kind minimises: vae the negative ELBO per image (nats), dcgan the
            generator's loss.
        terms: every term by name (vae: reconstruction, kl; dcgan: discriminator,
            generator).
        seconds: the epoch's wall time.
    """

    epoch: int
    loss: float
    terms: dict[str, float]
    seconds: float


@dataclass
class PriorTrainResult:
    """A finished (or interrupted) training.

    Attributes:
        prior: the prior in the state of the last completed epoch (the saved one).
        losses: one entry per completed epoch.
        seconds: wall time of the whole training.
        interrupted: Ctrl-C or SIGTERM ended it early.
        path: the saved prior; None when no epoch completed.
        samples_path: the picture of 16 samples beside it; None when no epoch completed.
        images: how many images it was trained on (before flips).
    """

    prior: GenerativePrior
    losses: list[EpochLoss]
    seconds: float
    interrupted: bool
    path: Path | None
    samples_path: Path | None = None
    images: int = 0


class _Learner(Protocol):
    """One kind's networks and optimisers: a step on a batch returns its loss terms."""

    generator: Generator

    def step(self, x: Tensor, rng: torch.Generator) -> dict[str, float]: ...


@dataclass
class _VAE:
    generator: Generator
    encoder: Encoder
    optimizer: torch.optim.Optimizer
    kl_weight: float

    def step(self, x: Tensor, rng: torch.Generator) -> dict[str, float]:
        mean, logvar = self.encoder(x)
        # Drawn on the CPU generator (the same on any device), then moved.
        noise = torch.randn(mean.shape, generator=rng, device=rng.device).to(mean.device)
        z = mean + noise * torch.exp(0.5 * logvar)
        decoded = self.generator(z)
        n = x.shape[0]
        reconstruction = F.binary_cross_entropy(decoded, x, reduction="sum") / n
        kl = -0.5 * torch.sum(1 + logvar - mean.square() - logvar.exp()) / n
        loss = reconstruction + self.kl_weight * kl
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        terms = {"loss": loss, "reconstruction": reconstruction, "kl": kl}
        return {key: float(value.detach()) for key, value in terms.items()}


@dataclass
class _DCGAN:
    generator: Generator
    discriminator: Discriminator
    g_optimizer: torch.optim.Optimizer
    d_optimizer: torch.optim.Optimizer
    latent_dim: int
    real_label: float = 0.9  # one-sided label smoothing

    def step(self, x: Tensor, rng: torch.Generator) -> dict[str, float]:
        n = x.shape[0]
        codes = torch.randn((n, self.latent_dim), generator=rng, device=rng.device)
        fake = self.generator(codes.to(x.device))
        real_logits = self.discriminator(x)
        fake_logits = self.discriminator(fake.detach())
        d_loss = F.binary_cross_entropy_with_logits(
            real_logits, torch.full_like(real_logits, self.real_label)
        ) + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
        self.d_optimizer.zero_grad(set_to_none=True)
        d_loss.backward()
        self.d_optimizer.step()
        # Non-saturating: the generator maximises log D(G(z)).
        logits = self.discriminator(fake)
        g_loss = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
        self.g_optimizer.zero_grad(set_to_none=True)
        g_loss.backward()
        self.g_optimizer.step()
        terms = {"loss": g_loss, "discriminator": d_loss, "generator": g_loss}
        return {key: float(value.detach()) for key, value in terms.items()}


def _build_vae(config: PriorTrainConfig) -> _Learner:
    channels, size, _ = config.data_shape()
    generator = Generator(config.latent_dim, channels, size, config.width)
    encoder = Encoder(config.latent_dim, channels, size, config.width)
    betas = _KINDS["vae"].betas
    params = [*encoder.parameters(), *generator.parameters()]
    optimizer = torch.optim.Adam(params, lr=config.resolved_lr, betas=betas)
    return _VAE(generator, encoder, optimizer, config.kl_weight)


def _build_dcgan(config: PriorTrainConfig) -> _Learner:
    channels, size, _ = config.data_shape()
    generator = Generator(config.latent_dim, channels, size, config.width)
    discriminator = Discriminator(channels, size, config.width)
    betas = _KINDS["dcgan"].betas
    lr = config.resolved_lr
    return _DCGAN(
        generator,
        discriminator,
        torch.optim.Adam(generator.parameters(), lr=lr, betas=betas),
        torch.optim.Adam(discriminator.parameters(), lr=lr, betas=betas),
        config.latent_dim,
    )


# One entry per kind of `GENERATIVE_KINDS`, as in `_KINDS`.
_BUILDERS: dict[str, Callable[[PriorTrainConfig], _Learner]] = {
    "vae": _build_vae,
    "dcgan": _build_dcgan,
}


def samples_path(out: Path) -> Path:
    """Where the picture of 16 samples goes: NAME.samples.png beside NAME.pt."""
    out = Path(out)
    return out.with_name(f"{out.stem}.samples.png")


def train_generative_prior(
    config: PriorTrainConfig,
    out: Path,
    *,
    progress: bool = True,
    overwrite: bool = False,
    on_epoch: Callable[[EpochLoss], None] | None = None,
    device: torch.device = CPU,
) -> PriorTrainResult:
    """Train a generative prior and save it after every epoch.

    Ctrl-C (or SIGTERM) ends training: the last completed epoch stays saved at `out` and
    the result says `interrupted`.

    Args:
        config: the training's settings; checked before anything is read or written.
        out: the prior file (.pt or .pth); NAME.samples.png goes beside it.
        progress: show a progress bar with the loss (on a terminal only).
        overwrite: replace an existing `out` (and its samples picture); without it they
            are refused before any work.
        on_epoch: called after each epoch is saved.
        device: where the networks and images go: built and seeded on the CPU, moved once
            (batches, noise and flips are drawn on the CPU, so a seed trains alike on any
            device up to float rounding); the file is saved from the CPU.

    Returns:
        The prior of the last completed epoch, the losses, the time taken, whether it was
        interrupted, and where it was saved.

    Raises:
        GradleakError: a setting is invalid, `out` is no .pt/.pth file, cannot be written
            or exists (without `overwrite`), or the data cannot be read or lacks the range.
    """
    config = config.validate()
    out = _check_out(Path(out), overwrite)
    images = open_images(config.dataset, config.data_root, config.split, config.image_size)
    config.validate(len(images))
    first, last = config.resolved_range(len(images))
    pixels, _ = images.pixels(range(first, last + 1))
    dataset = f"{images.description} {first}-{last}"
    if config.flips:
        dataset += ", flipped"
    with torch.random.fork_rng(devices=[]):
        # Initialisation from the seed without disturbing the caller's random state.
        torch.manual_seed(config.seed)
        learner = _BUILDERS[config.kind](config)
    # Built and seeded on the CPU, moved once with the images; the optimisers hold the same
    # parameters, moved in place.
    for network in vars(learner).values():
        if isinstance(network, nn.Module):
            network.to(device)
    prior = GenerativePrior(
        kind=config.kind,
        generator=learner.generator,
        latent_dim=config.latent_dim,
        data_shape=config.data_shape(),
        dataset=dataset,
        training_images=_to_uint8(pixels),
        epochs=0,
        mean=tuple(images.stats.mean),
        std=tuple(images.stats.std),
    )
    pixels = pixels.to(device)
    return _train(config, learner, prior, pixels, out, progress, on_epoch, (first, last))


def _train(
    config: PriorTrainConfig,
    learner: _Learner,
    prior: GenerativePrior,
    pixels: Tensor,
    out: Path,
    progress: bool,
    on_epoch: Callable[[EpochLoss], None] | None,
    index_range: tuple[int, int],
) -> PriorTrainResult:
    rng = torch.Generator().manual_seed(config.seed)
    n = len(pixels)
    epochs = config.resolved_epochs(n)
    saver = _Saver(config, prior, out, index_range, epochs)
    bar = tqdm(
        total=epochs * math.ceil(n / config.batch_size),
        desc=f"train-prior {config.kind}",
        unit="step",
        mininterval=0.5,
        disable=None if progress else True,  # None: only on a terminal
        leave=False,
    )
    losses: list[EpochLoss] = []
    interrupted = False
    start = time.perf_counter()
    try:
        for epoch in range(1, epochs + 1):
            began = time.perf_counter()
            learner.generator.train().requires_grad_(True)
            totals: dict[str, float] = {}
            # The epoch's order, drawn on the CPU and moved once (not once per step).
            order = torch.randperm(n, generator=rng, device=rng.device).to(pixels.device)
            for batch in order.split(config.batch_size):
                x = _flipped(pixels[batch], rng) if config.flips else pixels[batch]
                terms = learner.step(x, rng)
                for key, value in terms.items():
                    totals[key] = totals.get(key, 0.0) + value * len(batch)
                bar.set_postfix({"epoch": f"{epoch}/{epochs}", **_shown(terms)}, refresh=False)
                bar.update(1)
            mean = {key: value / n for key, value in totals.items()}
            record = EpochLoss(epoch, mean.pop("loss"), mean, time.perf_counter() - began)
            # Saving and counting the epoch are one step: a signal meanwhile is recorded
            # and acted on once both are done, so the file and the result always agree.
            hold_interrupts()
            try:
                saver.save([*losses, record], picture=epoch == epochs)
                losses.append(record)
            finally:
                held = release_interrupts()
            if held:
                raise KeyboardInterrupt
            if on_epoch is not None:
                on_epoch(record)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    if interrupted and losses:
        # The saved file says that its training stopped early; a second Ctrl-C while it is
        # rewritten is recorded (for the exit code), not raised, so the file stays whole.
        hold_interrupts()
        try:
            saver.save(losses, picture=True, interrupted=True)
        finally:
            release_interrupts()
    saver.restore()
    prior.path = str(out) if losses else ""
    return PriorTrainResult(
        prior,
        losses,
        seconds,
        interrupted,
        out if losses else None,
        samples_path(out) if losses else None,
        n,
    )


def _check_out(out: Path, overwrite: bool) -> Path:
    return check_out_file(
        out, "prior", PRIOR_SUFFIXES, existing=(out, samples_path(out)), overwrite=overwrite
    )


def _to_uint8(pixels: Tensor) -> Tensor:
    """The training images as kept in the file (the first `MAX_KEPT_IMAGES`)."""
    return (pixels[:MAX_KEPT_IMAGES] * 255).round().clamp(0, 255).to(torch.uint8)


def _flipped(x: Tensor, rng: torch.Generator) -> Tensor:
    """Each image mirrored left-right with probability 1/2."""
    flip = (torch.rand(x.shape[0], generator=rng, device=rng.device) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def _shown(terms: dict[str, float]) -> dict[str, str]:
    """The progress bar's view of a step's terms: the loss first, then the others."""
    return {key: f"{terms[key]:.4g}" for key in sorted(terms, key=lambda k: k != "loss")}


@dataclass
class _Saver:
    """Writes the prior after each epoch and remembers the state it wrote last.

    The samples picture is redrawn at most every `PICTURE_EVERY_S` seconds (and always
    for the last epoch): drawing it costs more than a small epoch (60 faces: one step).
    """

    config: PriorTrainConfig
    prior: GenerativePrior
    out: Path
    index_range: tuple[int, int]
    planned: int
    saved: dict[str, Tensor] | None = None
    saved_epochs: int = 0
    drawn_at: float = -math.inf
    # The same codes every time, so the picture shows the training's progress.
    codes: Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.codes = torch.randn(
            (SAMPLE_ROWS * SAMPLE_COLUMNS, self.config.latent_dim),
            generator=torch.Generator().manual_seed(self.config.seed + 1),
            device="cpu",
        )

    def save(self, losses: list[EpochLoss], *, picture: bool, interrupted: bool = False) -> None:
        """Write the prior of the generator as it is now, after `losses`' epochs."""
        config, prior, generator = self.config, self.prior, self.prior.generator
        if picture or time.monotonic() - self.drawn_at >= PICTURE_EVERY_S:
            self._draw()
        prior.epochs = len(losses)
        # The prior file is the last written: the epoch's commit.
        save_generative_prior(
            prior,
            self.out,
            split=config.split,
            index_range=list(self.index_range),
            seed=config.seed,
            batch_size=config.batch_size,
            lr=config.resolved_lr,
            augment=config.flips,
            kl_weight=config.kl_weight,
            epochs_planned=self.planned,
            losses=[e.loss for e in losses],
            interrupted=interrupted,
            gradleak_version=__version__,
        )
        self.saved = {k: v.detach().clone() for k, v in generator.state_dict().items()}
        self.saved_epochs = len(losses)

    def restore(self) -> None:
        """Put the generator back in the saved state (after Ctrl-C it may hold part of an
        epoch), frozen in eval mode as a prior is."""
        generator = self.prior.generator
        if self.saved is not None:
            generator.load_state_dict(self.saved)
        self.prior.epochs = self.saved_epochs
        generator.eval().requires_grad_(False)

    def _draw(self) -> None:
        generator = self.prior.generator
        was_training = generator.training
        generator.eval()
        with torch.no_grad():
            samples = generator(self.codes.to(next(generator.parameters()).device)).cpu()
        generator.train(was_training)
        rows = [
            [to_pil(image) for image in samples[r * SAMPLE_COLUMNS : (r + 1) * SAMPLE_COLUMNS]]
            for r in range(SAMPLE_ROWS)
        ]
        side = self.prior.data_shape[1]
        save_png(tile_rows(rows, scale=max(1, 64 // side)), samples_path(self.out))
        self.drawn_at = time.monotonic()
