"""The normalisation a run asks for (`--normalize`): its spelling, and the statistics it names.

A spec is one of:

- `auto`: per-channel mean and standard deviation of the images themselves, computed when
  they are loaded (all images of a set of at most `AUTO_SAMPLE`, else a sample of that many
  drawn with the fixed seed `AUTO_SEED`, so the statistics depend on the data alone, never
  on a run's seed). The std is the population std (divisor N) over every pixel of a channel.
- a known dataset's name (cifar10, cifar100, mnist, imagenet): that dataset's statistics.
- `MEAN/STD`: two comma lists with one value per channel, e.g. `0.5,0.5,0.5/0.25,0.25,0.25`.

The spelling is checked when a run is configured (`check_normalize`), before any work; the
statistics are made when the images are loaded (`normalization`). The normalisation is public
knowledge: the attacker is told the statistics and their name (`Normalization.name`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from gradleak.core.errors import GradleakError
from gradleak.data.datasets import DATASETS
from gradleak.data.source import ImageSource, stack

AUTO = "auto"
CUSTOM = "custom"  # the name recorded for statistics given as MEAN/STD
AUTO_SAMPLE = 2000  # images `auto` reads at most
AUTO_SEED = 0  # seed of the sample `auto` draws from larger sets
_CHUNK = 64  # images read at once while computing statistics (bounds the memory)
SPEC_FORMS = (
    f"{AUTO}, a dataset ({', '.join(DATASETS)}) or MEAN/STD such as 0.5,0.5,0.5/0.25,0.25,0.25"
)


@dataclass(frozen=True)
class Normalization:
    """Per-channel statistics the images are normalised with, and their name.

    Attributes:
        name: what the statistics are: a dataset's name, "auto" or "custom".
        mean: one mean per channel.
        std: one standard deviation per channel, each positive.
    """

    name: str
    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclass(frozen=True)
class NormalizeSpec:
    """A parsed `--normalize`: fixed statistics, or None for `auto` (made from the data)."""

    name: str
    fixed: Normalization | None

    @property
    def channels(self) -> int | None:
        """The channel count the fixed statistics are for (None for `auto`)."""
        return None if self.fixed is None else len(self.fixed.mean)


def _numbers(text: str, what: str, spec: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise GradleakError(
            f"--normalize {spec!r}: the {what} {text!r} is not a comma list of numbers; "
            f"give {SPEC_FORMS}"
        ) from None
    if not all(math.isfinite(v) for v in values):
        raise GradleakError(f"--normalize {spec!r}: the {what} must be finite numbers")
    return values


def _custom(spec: str) -> NormalizeSpec:
    mean_text, _, std_text = spec.partition("/")
    mean = _numbers(mean_text, "mean", spec)
    std = _numbers(std_text, "std", spec)
    if len(mean) != len(std):
        raise GradleakError(
            f"--normalize {spec!r} gives {len(mean)} means but {len(std)} stds; give one "
            "of each per channel"
        )
    if any(s <= 0 for s in std):
        raise GradleakError(f"--normalize {spec!r}: every std must be positive")
    return NormalizeSpec(CUSTOM, Normalization(CUSTOM, mean, std))


# The named specs: `auto`, and every known dataset's own statistics.
_NAMED: dict[str, NormalizeSpec] = {
    AUTO: NormalizeSpec(AUTO, None),
    **{
        name: NormalizeSpec(name, Normalization(name, spec.mean, spec.std))
        for name, spec in DATASETS.items()
    },
}


def parse_normalize(spec: str) -> NormalizeSpec:
    """Read a `--normalize` spec (see the module's docstring for the forms).

    Args:
        spec: `auto`, a known dataset's name (any letter case) or `MEAN/STD`.

    Returns:
        The parsed spec.

    Raises:
        GradleakError: an unknown name, or MEAN/STD that are not two equally long comma
            lists of finite numbers with every std positive.
    """
    text = str(spec).strip()
    named = _NAMED.get(text.lower())
    if named is not None:
        return named
    if "/" in text:
        return _custom(text)
    raise GradleakError(f"--normalize {spec!r} is not known; give {SPEC_FORMS}")


def check_normalize(spec: str, channels: int) -> NormalizeSpec:
    """Parse `spec` and check its statistics fit images of `channels` channels.

    Args:
        spec: a `--normalize` spec.
        channels: the channels of the images it normalises.

    Returns:
        The parsed spec.

    Raises:
        GradleakError: a bad spec, or fixed statistics for another channel count.
    """
    parsed = parse_normalize(spec)
    if parsed.channels not in (None, channels):
        raise GradleakError(
            f"--normalize {spec!r} has statistics for {parsed.channels} channel(s) but the "
            f"images have {channels}; give {channels} value(s) per list, or auto"
        )
    return parsed


def sample_indices(size: int, limit: int = AUTO_SAMPLE, seed: int = AUTO_SEED) -> list[int]:
    """The images `auto` reads: all of `size` if at most `limit`, else `limit` of them drawn
    without replacement with `seed`, in increasing order."""
    if size <= limit:
        return list(range(size))
    generator = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(size, generator=generator)[:limit].tolist())


_Stats = tuple[tuple[float, ...], tuple[float, ...]]


def _moments(images: Tensor) -> tuple[int, Tensor, Tensor]:
    """Pixels per channel, per-channel mean and sum of squared deviations, in float64."""
    pixels = images.to(torch.float64).transpose(0, 1).reshape(images.shape[1], -1)
    mean = pixels.mean(dim=1)
    return pixels.shape[1], mean, ((pixels - mean[:, None]) ** 2).sum(dim=1)


def _finish(count: int, mean: Tensor, m2: Tensor) -> _Stats:
    std = (m2 / count).sqrt()
    flat = [c for c, s in enumerate(std.tolist()) if not s > 0]
    if flat:
        raise GradleakError(
            f"--normalize auto: channel {flat[0]} has the same value in every pixel (std 0); "
            "give --normalize MEAN/STD or a dataset's name"
        )
    return tuple(mean.tolist()), tuple(std.tolist())


def pixel_statistics(images: Tensor) -> _Stats:
    """Per-channel mean and population std of every pixel of B×C×H×W `images`.

    Raises:
        GradleakError: a channel whose pixels are all equal (std 0).
    """
    return _finish(*_moments(images))


def image_statistics(
    source: ImageSource, limit: int = AUTO_SAMPLE, seed: int = AUTO_SEED
) -> _Stats:
    """Per-channel mean and population std of the pixels of `source`'s images.

    Args:
        source: the images (float32 C×H×W in [0, 1]), all of one shape.
        limit: read at most this many images (a seeded sample of larger sets).
        seed: the seed of that sample.

    Returns:
        (mean, std), one value per channel, over every pixel of the images read.

    Raises:
        GradleakError: an empty source, or a channel whose pixels are all equal (std 0).
    """
    indices = sample_indices(len(source), limit, seed)
    if not indices:
        raise GradleakError("no images to compute --normalize auto statistics from")
    # Chunk by chunk (bounded memory), merged with Chan et al.'s update of the mean and the
    # sum of squared deviations: in float64 exact enough even for nearly flat channels.
    count, mean, m2 = _moments(stack(source, indices[:_CHUNK])[0])
    for start in range(_CHUNK, len(indices), _CHUNK):
        n, chunk_mean, chunk_m2 = _moments(stack(source, indices[start : start + _CHUNK])[0])
        delta = chunk_mean - mean
        total = count + n
        mean = mean + delta * (n / total)
        m2 = m2 + chunk_m2 + delta**2 * (count * n / total)
        count = total
    return _finish(count, mean, m2)


def normalization(
    spec: str | None,
    default: Normalization,
    channels: int,
    statistics: Callable[[], _Stats],
) -> Normalization:
    """The statistics a run's images are normalised with.

    Args:
        spec: the `--normalize` spec, or None for `default`.
        default: the statistics without a spec (the dataset's own, or the photo ones).
        channels: the images' channel count.
        statistics: the images' (mean, std), e.g. `image_statistics` of them; called only
            for `auto`.

    Returns:
        The statistics and their name.

    Raises:
        GradleakError: a bad spec, statistics for another channel count, or `auto` on
            images it cannot compute statistics of.
    """
    if spec is None:
        return default
    parsed = check_normalize(spec, channels)
    if parsed.fixed is not None:
        return parsed.fixed
    mean, std = statistics()
    return Normalization(AUTO, mean, std)
