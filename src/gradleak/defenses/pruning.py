"""Magnitude pruning: zero the smallest-magnitude fraction of the shared entries.

With `fraction` p, exactly round(p·n) entries become zero (halves round up), where n is
the size of each tensor (scope `layer`) or of all tensors together (scope `global`).
Entries are ranked by |value|; equal magnitudes are ranked by position (the update's
tensor order, then the flat index), so the earlier one is pruned first. Entries that are
already zero rank lowest and count among the pruned ones.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch

from gradleak.core.errors import GradleakError
from gradleak.core.update import SharedUpdate
from gradleak.defenses.arguments import check_count, parse_choice, parse_number
from gradleak.defenses.base import ClientView, with_tensors

NAME = "prune"
USAGE = "prune:FRACTION[:SCOPE] with FRACTION in [0, 1) and SCOPE one of layer (default), global"
FRACTION_RANGE = "in [0, 1)"
HELP = "zero the smallest-magnitude fraction of entries, per tensor or across all tensors"


class PruneScope(str, enum.Enum):
    LAYER = "layer"
    GLOBAL = "global"


def pruned_count(fraction: float, size: int) -> int:
    """round(fraction · size), halves rounded up."""
    return min(size, math.floor(fraction * size + 0.5))


def _keep_mask(magnitudes: torch.Tensor, fraction: float) -> torch.Tensor:
    """False at the round(p·n) smallest entries of the flat `magnitudes`, ties by index."""
    count = pruned_count(fraction, magnitudes.numel())
    order = torch.argsort(magnitudes, stable=True)
    keep = torch.ones(magnitudes.numel(), dtype=torch.bool)
    keep[order[:count]] = False
    return keep


def _magnitudes(tensor: torch.Tensor) -> torch.Tensor:
    # float64 on the CPU holds every float32/16 magnitude exactly, so ranks are exact.
    return tensor.detach().abs().flatten().to(device="cpu", dtype=torch.float64)


def _masked(tensor: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    keep = keep.reshape(tensor.shape).to(tensor.device)
    return torch.where(keep, tensor, torch.zeros_like(tensor))


KeepMask = Callable[[torch.Tensor, float], torch.Tensor]


def masked_by_magnitude(
    tensors: Mapping[str, torch.Tensor], fraction: float, scope: PruneScope, keep_mask: KeepMask
) -> dict[str, torch.Tensor]:
    """Zero what `keep_mask` drops, ranking each tensor alone or all of them together."""
    if scope is PruneScope.LAYER:
        return {n: _masked(t, keep_mask(_magnitudes(t), fraction)) for n, t in tensors.items()}
    if not tensors:
        return {}
    keep = keep_mask(torch.cat([_magnitudes(t) for t in tensors.values()]), fraction)
    sizes = [t.numel() for t in tensors.values()]
    return {
        name: _masked(t, part)
        for (name, t), part in zip(tensors.items(), keep.split(sizes), strict=True)
    }


@dataclass(frozen=True)
class MagnitudeMask:
    """Zero entries chosen by magnitude (`keep_mask`), per tensor or over all tensors."""

    fraction: float
    scope: PruneScope = PruneScope.LAYER

    name: ClassVar[str]

    def __post_init__(self) -> None:
        self.check_fraction(self.fraction)
        object.__setattr__(self, "fraction", float(self.fraction))
        object.__setattr__(self, "scope", PruneScope(self.scope))

    @staticmethod
    def check_fraction(fraction: float) -> None:
        raise NotImplementedError

    @staticmethod
    def keep_mask(magnitudes: torch.Tensor, fraction: float) -> torch.Tensor:
        raise NotImplementedError

    @property
    def spec(self) -> str:
        suffix = "" if self.scope is PruneScope.LAYER else f":{self.scope.value}"
        return f"{self.name}:{self.fraction!r}{suffix}"

    def apply(
        self,
        update: SharedUpdate,
        generator: torch.Generator,
        client: ClientView | None = None,
    ) -> SharedUpdate:
        masked = masked_by_magnitude(update.tensors, self.fraction, self.scope, self.keep_mask)
        return with_tensors(update, masked)


def _check_fraction(fraction: float) -> None:
    if not 0 <= fraction < 1:  # also rejects NaN
        raise GradleakError(f"prune fraction must be {FRACTION_RANGE}, got {fraction}")


@dataclass(frozen=True)
class Pruning(MagnitudeMask):
    """Zero the `fraction` smallest-magnitude entries, per tensor or over all tensors."""

    name: ClassVar[str] = NAME
    check_fraction = staticmethod(_check_fraction)
    keep_mask = staticmethod(_keep_mask)


def parse(args: list[str]) -> Pruning:
    """`prune:FRACTION[:SCOPE]`."""
    check_count(NAME, args, USAGE, 1, 2)
    fraction = parse_number(args[0], "prune fraction", FRACTION_RANGE)
    scope = parse_choice(args[1], PruneScope, "prune scope") if len(args) > 1 else None
    return Pruning(fraction, scope or PruneScope.LAYER)
