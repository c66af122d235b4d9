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
from typing import ClassVar

import torch

from gradleak.core.errors import GradleakError
from gradleak.core.update import SharedUpdate
from gradleak.defenses.accounting import GaussianMechanism
from gradleak.defenses.arguments import check_count, parse_choice, parse_number
from gradleak.defenses.base import (
    ChainRole,
    ClientView,
    check_no_overflow,
    largest_noise_std,
    map_tensors,
)

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
    scale √(variance/2), hence the same variance. Any number compose (independent noise
    adds up). Without a bound on what one record contributes to the update, the noise
    gives no differential-privacy guarantee (DP-SGD clips for that).

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

    role: ClassVar[ChainRole] = ChainRole()
    mechanism: ClassVar[GaussianMechanism | None] = None

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
            GradleakError: when the noise would overflow a tensor's dtype (its standard
                deviation above the dtype's largest value / 1000), before anything is drawn,
                or did overflow it, naming the largest variance that fits.
        """
        std = math.sqrt(self.variance)
        for name, tensor in update.tensors.items():
            if tensor.is_floating_point() and std > largest_noise_std(tensor.dtype):
                raise self._overflow(name, tensor)
        sample = SAMPLERS[self.kind]

        def noisy(tensor: torch.Tensor) -> torch.Tensor:
            noise = sample(tensor.shape, tensor.dtype, self.variance, generator)
            return tensor + noise.to(tensor.device)

        shared = map_tensors(update, noisy)
        check_no_overflow(update.tensors, shared, self._overflow)
        return shared

    def _overflow(self, name: str, tensor: torch.Tensor) -> GradleakError:
        """The one line for noise too large for `tensor`'s dtype, with the variance that fits."""
        dtype = str(tensor.dtype).removeprefix("torch.")
        std = largest_noise_std(tensor.dtype)
        largest = std * std  # inf for float64, whose variances all fit (no OverflowError)
        return GradleakError(
            f"defense {self.spec!r} overflows update tensor {name!r}: noise of variance "
            f"{self.variance:.3g} does not fit in {dtype} (largest value "
            f"{torch.finfo(tensor.dtype).max:.3g}); use a variance of at most {largest:.3g}"
        )


def parse(args: list[str]) -> AdditiveNoise:
    """`noise:KIND:VARIANCE`."""
    check_count(NAME, args, USAGE, 2, 2)
    kind = parse_choice(args[0], NoiseKind, "noise kind")
    variance = parse_number(args[1], "noise variance", VARIANCE_RANGE)
    return AdditiveNoise(kind, variance)
