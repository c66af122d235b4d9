"""Additive noise on every shared tensor, Gaussian or Laplacian, set by its variance.

DLG (Zhu et al. 2019, §5) reports noise by variance (1e-4 … 1e-1), so the variance is the
parameter here for both kinds: Gaussian N(0, σ²) with σ = √var, Laplacian with scale
b = √(var/2), whose variance 2b² is the same.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from gradleak.core.errors import GradleakError
from gradleak.core.update import SharedUpdate
from gradleak.defenses.arguments import check_count, parse_choice, parse_number
from gradleak.defenses.base import ClientView, map_floating

NAME = "noise"
USAGE = "noise:KIND:VARIANCE with KIND one of gaussian, laplacian (e.g. noise:gaussian:1e-3)"
VARIANCE_RANGE = "a finite number >= 0"
HELP = "add zero-mean Gaussian or Laplacian noise of the given variance to every tensor"


class NoiseKind(str, enum.Enum):
    """The distribution of `AdditiveNoise`: Gaussian or Laplacian, both zero-mean."""

    GAUSSIAN = "gaussian"
    LAPLACIAN = "laplacian"


# A sampler draws zero-mean noise of the given variance: (shape, dtype, variance, generator).
Sampler = Callable[[torch.Size, torch.dtype, float, torch.Generator], torch.Tensor]


def _gaussian(
    shape: torch.Size, dtype: torch.dtype, variance: float, generator: torch.Generator
) -> torch.Tensor:
    noise = torch.randn(shape, dtype=dtype, device=generator.device, generator=generator)
    return noise * math.sqrt(variance)


def _laplacian(
    shape: torch.Size, dtype: torch.dtype, variance: float, generator: torch.Generator
) -> torch.Tensor:
    # The difference of two independent Exp(1) draws is Laplace(0, 1), of variance 2.
    def exponential() -> torch.Tensor:
        out = torch.empty(shape, dtype=dtype, device=generator.device)
        return out.exponential_(generator=generator)

    return (exponential() - exponential()) * math.sqrt(variance / 2)


SAMPLERS: dict[NoiseKind, Sampler] = {
    NoiseKind.GAUSSIAN: _gaussian,
    NoiseKind.LAPLACIAN: _laplacian,
}


@dataclass(frozen=True)
class AdditiveNoise:
    """Add independent zero-mean noise of variance `variance` to every entry of every tensor.

    Spelled `noise:KIND:VARIANCE`. Gaussian noise is N(0, variance); Laplacian noise has
    scale √(variance/2), hence the same variance.

    Args:
        kind: `NoiseKind.GAUSSIAN` or `NoiseKind.LAPLACIAN` (or its value, "gaussian" or
            "laplacian").
        variance: the variance of every entry's noise, in squared units of the update; a
            finite number >= 0 (0 adds exact zeros).

    Raises:
        GradleakError: when `variance` is negative, infinite or NaN.
    """

    kind: NoiseKind
    variance: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", NoiseKind(self.kind))
        if not (math.isfinite(self.variance) and self.variance >= 0):
            raise GradleakError(f"noise variance must be {VARIANCE_RANGE}, got {self.variance}")
        object.__setattr__(self, "variance", float(self.variance))

    @property
    def spec(self) -> str:
        """`noise:KIND:VARIANCE`, which `parse_defense` reads back as an equal defense."""
        return f"{NAME}:{self.kind.value}:{self.variance!r}"

    def apply(
        self,
        update: SharedUpdate,
        generator: torch.Generator,
        client: ClientView | None = None,
    ) -> SharedUpdate:
        """Add fresh noise to every entry of every tensor of `update`.

        Args:
            update: the update to perturb; left unchanged.
            generator: the source of the noise, drawn on its device in each tensor's dtype,
                tensor by tensor in the update's order, so a seed repeats it.
            client: ignored; default None.

        Returns:
            A new update whose tensors are the old ones plus noise (same shape, dtype and
            device), with `update`'s kind, metadata and buffers.

        Raises:
            GradleakError: when a tensor of `update` is not floating point.
        """
        sample = SAMPLERS[self.kind]

        def noisy(tensor: torch.Tensor) -> torch.Tensor:
            noise = sample(tensor.shape, tensor.dtype, self.variance, generator)
            return tensor + noise.to(tensor.device)

        return map_floating(update, noisy, "add noise to", "noise")


def parse(args: list[str]) -> AdditiveNoise:
    """`noise:KIND:VARIANCE`."""
    check_count(NAME, args, USAGE, 2, 2)
    kind = parse_choice(args[0], NoiseKind, "noise kind")
    variance = parse_number(args[1], "noise variance", VARIANCE_RANGE)
    return AdditiveNoise(kind, variance)
