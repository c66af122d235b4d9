"""Generative image priors: a trained decoder from a latent code to images, and its file.

A generative prior restricts an attack's candidates to what a generator trained on public
images can produce: a latent search (GGL) optimises the code z of `Generator(z)`, a
generator fine-tuning (GIAS) also adapts the generator's weights per image. The networks
here are small DCGAN-style convolutional nets, sized so a CPU trains one on a few hundred
images in minutes (`gradleak train-prior`, `gradleak.training.generative`).

The generator uses group normalisation, never batch normalisation: an attack evaluates it
on a stack of independent trials (`torch.func.vmap`) and fine-tunes a copy of its weights
per image, and batch statistics would couple the images of a batch with each other.

A prior file holds only tensors and plain values (`save_generative_prior`), so loading one
from elsewhere runs no code (`load_generative_prior`). It keeps the images the generator
was trained on (the first `MAX_KEPT_IMAGES`), so a report can put each reconstruction beside
its nearest training image: a reconstruction that looks like a training image but not like
the attacked one is the prior's memory, not leakage.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from gradleak.attacks.priors.nearest import nearest_stored_images
from gradleak.core.errors import GradleakError
from gradleak.core.files import replaced_atomically

FORMAT = "gradleak-generative-prior"
VERSION = 1
# Kept in the file for `nearest_training_images`: enough to tell memorisation from leakage
# for the few hundred images a CPU trains on, small enough (6 MB at 3×32×32) to travel.
MAX_KEPT_IMAGES = 2_000
# The generator doubles the side twice from a (side / 4)-pixel feature map.
SIDE_MULTIPLE = 4
_SLOPE = 0.2  # LeakyReLU's negative slope, as in DCGAN

GENERATIVE_KINDS: dict[str, str] = {
    "vae": "variational autoencoder: an encoder and the decoder trained on reconstruction "
    "plus KL; stable on a few hundred images, blurry samples",
    "dcgan": "DCGAN: the generator trained against a discriminator; sharper samples, less "
    "stable on small data sets",
}

_HOW_TO_MAKE = (
    "make one with `gradleak train-prior --kind vae --dataset cifar10 --data-root DIR "
    "--out PRIOR.pt`"
)


def _groups(channels: int) -> int:
    """Groups of a GroupNorm over `channels`: 8 where they divide evenly (as few as needed)."""
    return math.gcd(channels, 8)


def check_side(size: int, channels: int) -> None:
    """Refuse an image shape the networks cannot produce.

    Args:
        size: side of the square images.
        channels: channels of the images.

    Raises:
        GradleakError: `size` is not a positive multiple of 4, or `channels` is not 1 or 3.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < SIDE_MULTIPLE:
        raise GradleakError(
            f"image size {size!r} is not a side of 4 pixels or more; generative priors make "
            "square images whose side is a multiple of 4, e.g. 28 or 32"
        )
    if size % SIDE_MULTIPLE:
        lower = size - size % SIDE_MULTIPLE
        raise GradleakError(
            f"image size {size} is not a multiple of 4, which a generative prior needs (its "
            f"generator doubles a side/4 map twice); use --image-size {lower} or "
            f"{lower + SIDE_MULTIPLE}"
        )
    if channels not in (1, 3):
        raise GradleakError(f"generative priors make 1- or 3-channel images, not {channels}")


def _positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise GradleakError(f"{name} must be an integer of at least 1, got {value!r}")


def _up_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """Double the side: nearest upsampling then a 3×3 convolution (no checkerboard)."""
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"),
        nn.Conv2d(in_channels, out_channels, 3, padding=1),
        nn.GroupNorm(_groups(out_channels), out_channels),
        nn.LeakyReLU(_SLOPE),
    )


class Generator(nn.Module):
    """A DCGAN-style decoder from latent codes to images with pixels in [0, 1].

    z → Linear → (2·width)×(size/4)×(size/4) → two (upsample, 3×3 conv, GroupNorm,
    LeakyReLU) blocks to width/2 channels at full size → 3×3 conv → sigmoid. About 0.6 M
    parameters at 3×32×32 with latent 64 and width 64.

    Args:
        latent_dim: length of the latent code z.
        channels: channels of the images (1 or 3).
        size: side of the square images; a multiple of 4 (28 and 32 work).
        width: channels of the middle block; the first has twice, the last half as many.

    Raises:
        GradleakError: a size or channel count it cannot make, or a dimension below 1.
    """

    def __init__(self, latent_dim: int, channels: int, size: int, width: int = 64) -> None:
        super().__init__()
        _positive("latent_dim", latent_dim)
        _positive("width", width)
        check_side(size, channels)
        if width < 2:
            raise GradleakError(
                f"width must be at least 2 (the last block has width/2), got {width}"
            )
        self.latent_dim, self.channels, self.size, self.width = latent_dim, channels, size, width
        self._start = size // SIDE_MULTIPLE
        self.project = nn.Linear(latent_dim, 2 * width * self._start**2)
        self.body = nn.Sequential(
            nn.GroupNorm(_groups(2 * width), 2 * width),
            nn.LeakyReLU(_SLOPE),
            _up_block(2 * width, width),
            _up_block(width, width // 2),
            nn.Conv2d(width // 2, channels, 3, padding=1),
        )

    def forward(self, z: Tensor) -> Tensor:
        """Images for latent codes.

        Args:
            z: codes, ...×latent_dim (any leading shape, usually N×latent_dim).

        Returns:
            Pixels in [0, 1], ...×channels×size×size.
        """
        lead = z.shape[:-1]
        h = self.project(z.reshape(-1, self.latent_dim))
        h = h.reshape(-1, 2 * self.width, self._start, self._start)
        x = torch.sigmoid(self.body(h))
        return x.reshape(*lead, self.channels, self.size, self.size)


class Encoder(nn.Module):
    """A VAE's encoder: images in [0, 1] → the mean and log-variance of their codes.

    Two stride-2 4×4 convolutions (width/2, width channels, GroupNorm, LeakyReLU), then a
    linear layer to 2·latent_dim. Used only in training.

    Args:
        latent_dim: length of the latent code.
        channels: channels of the images (1 or 3).
        size: side of the square images; a multiple of 4.
        width: channels of the last convolution.
    """

    def __init__(self, latent_dim: int, channels: int, size: int, width: int = 64) -> None:
        super().__init__()
        check_side(size, channels)
        self.latent_dim = latent_dim
        half = max(width // 2, 1)
        self.features = nn.Sequential(
            nn.Conv2d(channels, half, 4, stride=2, padding=1),
            nn.LeakyReLU(_SLOPE),
            nn.Conv2d(half, width, 4, stride=2, padding=1),
            nn.GroupNorm(_groups(width), width),
            nn.LeakyReLU(_SLOPE),
            nn.Flatten(),
        )
        self.head = nn.Linear(width * (size // SIDE_MULTIPLE) ** 2, 2 * latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance, each N×latent_dim, of the codes of N images."""
        mean, logvar = self.head(self.features(x)).chunk(2, dim=1)
        return mean, logvar


class Discriminator(nn.Module):
    """DCGAN's critic: images in [0, 1] → one logit each (real vs generated).

    Two stride-2 4×4 convolutions (width, 2·width channels) and a 3×3 one at a quarter of
    the side (2·width), each with LeakyReLU and no normalisation, then a linear layer.
    About as costly as the generator, so neither outruns the other. Used only in training.

    Args:
        channels: channels of the images (1 or 3).
        size: side of the square images; a multiple of 4.
        width: channels of the first convolution.
    """

    def __init__(self, channels: int, size: int, width: int = 64) -> None:
        super().__init__()
        check_side(size, channels)
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 4, stride=2, padding=1),
            nn.LeakyReLU(_SLOPE),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1),
            nn.LeakyReLU(_SLOPE),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1),
            nn.LeakyReLU(_SLOPE),
            nn.Flatten(),
            nn.Linear(2 * width * (size // SIDE_MULTIPLE) ** 2, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        """One logit per image, shape N."""
        return self.net(x).squeeze(1)


def _shape_text(shape: tuple[int, ...]) -> str:
    return "×".join(str(d) for d in shape)


@dataclass
class GenerativePrior:
    """A trained generator and what it was trained on.

    Attributes:
        kind: how the generator was trained: "vae" or "dcgan" (`GENERATIVE_KINDS`).
        generator: the decoder, in eval mode; its parameters do not require gradients
            (an attack that fine-tunes it turns them on, or uses its own copy).
        latent_dim: length of its latent codes.
        data_shape: (C, H, W) of the images it makes.
        dataset: the training images, e.g. "cifar10 test split 100-599".
        training_images: the first `MAX_KEPT_IMAGES` (2,000) training images, uint8
            N×C×H×W (augmented copies not included); a larger training set keeps only
            its first 2,000 here.
        epochs: completed passes over the training images.
        path: the file it was loaded from; "" if it was not.
        mean: per-channel normalisation mean of the training dataset (for provenance).
        std: per-channel normalisation std of the training dataset.
    """

    kind: str
    generator: Generator
    latent_dim: int
    data_shape: tuple[int, int, int]
    dataset: str
    training_images: Tensor
    epochs: int
    path: str = ""
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        self.generator.eval()
        self.generator.requires_grad_(False)

    @property
    def _name(self) -> str:
        return f"prior {self.path}" if self.path else "the prior"

    def check_fits(self, data_shape: tuple[int, ...], where: str = "attacked") -> None:
        """Refuse images of another shape than the generator makes.

        Args:
            data_shape: (C, H, W) of the images it would stand for.
            where: what those images are, for the message (e.g. "attacked").

        Raises:
            GradleakError: the shapes differ; the message names both and the command that
                trains a prior for the other shape.
        """
        shape = tuple(int(d) for d in data_shape)
        if shape == tuple(self.data_shape):
            return
        size_flag = f" --image-size {shape[-1]}" if len(shape) == 3 else ""
        raise GradleakError(
            f"{self._name} was trained for {_shape_text(self.data_shape)} images "
            f"({self.dataset}); the {where} images are {_shape_text(shape)}: train one with "
            f"`gradleak train-prior --dataset ...{size_flag}` on data of that shape"
        )

    def latents(self, shape: int | tuple[int, ...], generator: torch.Generator) -> Tensor:
        """Standard normal latent codes, the distribution the generator was trained on.

        Args:
            shape: how many codes (an int n gives n×latent_dim), or their leading shape
                (a tuple (T, B) gives T×B×latent_dim): latent_dim is always appended.
            generator: the random stream; the codes are made on its device.

        Returns:
            float32 codes, shape + (latent_dim,).
        """
        lead = (shape,) if isinstance(shape, int) else tuple(shape)
        return torch.randn((*lead, self.latent_dim), generator=generator, device=generator.device)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        """n images from random codes.

        Args:
            n: how many.
            generator: the random stream of the codes.

        Returns:
            Pixels in [0, 1], n×C×H×W, on the device of the prior's generator.
        """
        device = next(self.generator.parameters()).device
        z = self.latents(n, generator).to(device)
        with torch.no_grad():
            return self.generator(z)

    def nearest_training_images(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """The training image nearest to each image (mean squared error over pixels).

        Args:
            images: pixels in [0, 1], B×C×H×W of this prior's shape.

        Returns:
            The nearest training images as float pixels in [0, 1], B×C×H×W (on `images`'
            device), and their indices into `training_images`, int64 (B,).

        Raises:
            GradleakError: `images` is not a batch of this prior's shape, or the prior
                keeps no training images.
        """
        if images.ndim != 4:
            raise GradleakError(
                f"nearest_training_images needs a B×C×H×W batch, got {tuple(images.shape)}"
            )
        self.check_fits(tuple(images.shape[1:]), "compared")
        if len(self.training_images) == 0:
            raise GradleakError(f"{self._name} keeps no training images to compare with")
        nearest, indices = nearest_stored_images(self.training_images, images)
        return nearest.to(images.device, images.dtype), indices


def save_generative_prior(prior: GenerativePrior, path: Path | str, **extra: object) -> Path:
    """Write a prior as tensors and plain values, replacing `path` whole.

    Args:
        prior: the prior to save.
        path: the file (.pt); missing folders are created.
        **extra: further plain values to record (e.g. the training's seed and losses).

    Returns:
        `path` as a Path.
    """
    path = Path(path)
    generator = prior.generator
    payload: dict[str, object] = {
        **extra,
        "format": FORMAT,
        "version": VERSION,
        "kind": prior.kind,
        "latent_dim": prior.latent_dim,
        "data_shape": list(prior.data_shape),
        "width": generator.width,
        "dataset": prior.dataset,
        "epochs": prior.epochs,
        "mean": list(prior.mean),
        "std": list(prior.std),
        "state": {k: v.detach().cpu().clone() for k, v in generator.state_dict().items()},
        "training_images": prior.training_images[:MAX_KEPT_IMAGES].to(torch.uint8).cpu(),
    }
    with replaced_atomically(path) as partial:
        torch.save(payload, partial)
    return path


def load_generative_prior(path: Path | str) -> GenerativePrior:
    """Read a prior that `save_generative_prior` wrote; no code in the file runs.

    Args:
        path: the prior file.

    Returns:
        The prior, its generator in eval mode with gradients off, `path` recorded.

    Raises:
        GradleakError: the file is missing, a folder, unreadable, not a tensors-only
            torch file, not a generative prior (e.g. a model checkpoint), written by a
            newer gradleak, or damaged (one line naming the file and what to do).
    """
    path = Path(path)
    payload = _read(path)
    data_shape = _field(payload, "data_shape", path)
    latent_dim, width, epochs = (
        _field(payload, key, path) for key in ("latent_dim", "width", "epochs")
    )
    kind, dataset = _field(payload, "kind", path), _field(payload, "dataset", path)
    if kind not in GENERATIVE_KINDS:
        raise _damaged(path, f"kind {kind!r} is none of {', '.join(GENERATIVE_KINDS)}")
    if not (
        isinstance(data_shape, list)
        and len(data_shape) == 3
        and all(_is_int(d) for d in data_shape)
    ):
        raise _damaged(path, f"data_shape {data_shape!r} is not [C, H, W]")
    channels, height, width_px = data_shape
    if height != width_px:
        raise _damaged(path, f"data_shape {data_shape} is not square")
    for key, value in (("latent_dim", latent_dim), ("width", width), ("epochs", epochs)):
        if not _is_int(value) or value < 0:
            raise _damaged(path, f"{key} {value!r} is not a count")
    try:
        with torch.device("cpu"):  # loaded on the CPU, as the file's tensors are
            generator = Generator(latent_dim, channels, height, width)
    except GradleakError as error:
        raise _damaged(path, str(error)) from error
    _load_state(generator, payload.get("state"), path)
    images = payload.get("training_images")
    if (
        not isinstance(images, Tensor)
        or images.dtype != torch.uint8
        or tuple(images.shape[1:]) != tuple(data_shape)
        or images.ndim != 4
    ):
        raise _damaged(path, f"training_images is not uint8 N×{_shape_text(tuple(data_shape))}")
    return GenerativePrior(
        kind=kind,
        generator=generator,
        latent_dim=latent_dim,
        data_shape=(channels, height, width_px),
        dataset=str(dataset),
        training_images=images,
        epochs=epochs,
        path=str(path),
        mean=_floats(payload.get("mean")),
        std=_floats(payload.get("std")),
    )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _floats(value: object) -> tuple[float, ...]:
    if isinstance(value, list) and all(isinstance(v, (int, float)) for v in value):
        return tuple(float(v) for v in value)
    return ()


def _read(path: Path) -> Mapping[str, object]:
    """The file's payload, checked to be a generative prior of a version this reads."""
    if path.is_dir():
        raise GradleakError(
            f"generative prior {path} is a folder, not a file; pass the prior's .pt file, or "
            f"{_HOW_TO_MAKE}"
        )
    if not path.is_file():
        raise GradleakError(f"generative prior not found: {path}; {_HOW_TO_MAKE}")
    try:
        # weights_only refuses pickled code, so a hostile file cannot run anything.
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError as error:
        raise GradleakError(
            f"generative prior {path} cannot be read (permission denied); check its mode"
        ) from error
    # torch.load raises many unrelated types for files that are no torch file (see
    # models/checkpoint.py); the block calls nothing else, so each means a bad file.
    except Exception as error:
        raise GradleakError(
            f"{path} is not a generative prior (not a tensors-only torch file: "
            f"{type(error).__name__}); {_HOW_TO_MAKE}"
        ) from error
    if not isinstance(payload, Mapping) or payload.get("format") != FORMAT:
        raise GradleakError(
            f"{path} is {_what_it_is(payload)}, not a generative prior; {_HOW_TO_MAKE}"
        )
    version = payload.get("version")
    if not _is_int(version) or version > VERSION:
        raise GradleakError(
            f"generative prior {path} has format version {version!r}, newer than this "
            f"gradleak reads ({VERSION}); upgrade gradleak or train the prior again"
        )
    return payload


def _what_it_is(payload: object) -> str:
    """What a file that is no generative prior holds, in words."""
    if isinstance(payload, Mapping):
        found = payload.get("format")
        if isinstance(found, str):
            shown = found if found.isprintable() else repr(found)
            return f"a {shown[:60]} file"
        if any(isinstance(payload.get(key), Mapping) for key in ("state_dict", "model")):
            return "a model checkpoint (e.g. from `gradleak train`)"
        if payload and all(isinstance(v, Tensor) for v in payload.values()):
            return "a bare state_dict"
    return f"a torch file holding a {type(payload).__name__}"


def _field(payload: Mapping[str, object], key: str, path: Path) -> object:
    if key not in payload:
        raise _damaged(path, f"it has no {key!r}")
    return payload[key]


def _damaged(path: Path, problem: str) -> GradleakError:
    return GradleakError(
        f"generative prior {path} is damaged ({problem}); train it again with `gradleak "
        "train-prior`"
    )


def _load_state(generator: Generator, state: object, path: Path) -> None:
    """Load the saved weights, refusing missing, extra, misshapen or non-finite tensors."""
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise _damaged(path, "its 'state' is no dict of tensors")
    expected = generator.state_dict()
    if set(state) != set(expected):
        differ = sorted(set(state) ^ set(expected))
        raise _damaged(path, f"weights {', '.join(differ[:3])} do not fit its generator")
    for name, tensor in expected.items():
        saved = state[name]
        if saved.shape != tensor.shape or not saved.is_floating_point():
            raise _damaged(path, f"weight {name} is {saved.dtype} {tuple(saved.shape)}")
        if not bool(torch.isfinite(saved).all()):
            raise _damaged(path, f"weight {name} holds NaN or infinity: its training diverged")
    generator.load_state_dict(dict(state), strict=True)
