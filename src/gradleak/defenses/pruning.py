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
from typing import ClassVar, TypeVar

import torch

from gradleak.core.errors import GradleakError
from gradleak.core.update import SharedUpdate
from gradleak.defenses.accounting import GaussianMechanism
from gradleak.defenses.arguments import check_count, parse_choice, parse_number
from gradleak.defenses.base import ChainRole, ClientView, Family, with_tensors

NAME = "prune"
USAGE = "prune:FRACTION[:SCOPE] with FRACTION in [0, 1) and SCOPE one of layer (default), global"
FRACTION_RANGE = "in [0, 1)"
HELP = "zero the smallest-magnitude fraction of entries, per tensor or across all tensors"


class PruneScope(str, enum.Enum):
    """Whether `Pruning` and `TopK` rank each tensor alone (`layer`) or all together."""

    LAYER = "layer"
    GLOBAL = "global"


def pruned_count(fraction: float, size: int) -> int:
    """round(fraction · size), halves rounded up."""
    return min(size, math.floor(fraction * size + 0.5))


def _keep_mask(magnitudes: torch.Tensor, fraction: float) -> torch.Tensor:
    """False at the round(p·n) smallest entries of the flat `magnitudes`, ties by index."""
    count = pruned_count(fraction, magnitudes.numel())
    order = torch.argsort(magnitudes, stable=True)
    keep = torch.ones(magnitudes.numel(), dtype=torch.bool, device=magnitudes.device)
    keep[order[:count]] = False
    return keep


def _magnitudes(tensor: torch.Tensor) -> torch.Tensor:
    # float64 on the CPU holds every float32/16 magnitude exactly, so ranks are exact.
    return tensor.detach().abs().flatten().to(device="cpu", dtype=torch.float64)


def _masked(tensor: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    keep = keep.reshape(tensor.shape).to(tensor.device)
    return torch.where(keep, tensor, torch.zeros_like(tensor))


KeepMask = Callable[[torch.Tensor, float], torch.Tensor]

# Zeros rank lowest, so a second magnitude mask keeps (nearly) what the first kept, or
# zeroes a superset of it: whichever zeroes more leaves the other nothing to do.
MAGNITUDE_MASKS = Family(
    "zero entries by magnitude", "the one that zeroes more leaves the other nothing to do"
)


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
    """Zero entries chosen by magnitude (`keep_mask`), per tensor or over all tensors.

    The shared base of `Pruning` and `TopK`: a subclass names its spelling (`name`), the
    check of its fraction (`check_fraction`) and which entries it keeps (`keep_mask`). A
    chain holds one magnitude mask (`MAGNITUDE_MASKS`).
    """

    fraction: float
    scope: PruneScope = PruneScope.LAYER

    name: ClassVar[str]
    role: ClassVar[ChainRole] = ChainRole(family=MAGNITUDE_MASKS)
    mechanism: ClassVar[GaussianMechanism | None] = None

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
        """`NAME:FRACTION`, plus `:global` for that scope; `parse_defense` reads it back."""
        suffix = "" if self.scope is PruneScope.LAYER else f":{self.scope.value}"
        return f"{self.name}:{self.fraction!r}{suffix}"

    def apply(
        self,
        update: SharedUpdate,
        generator: torch.Generator,
        client: ClientView | None = None,
    ) -> SharedUpdate:
        """Zero the entries the mask drops; every other entry is kept bit for bit.

        Entries are ranked by |value| within each tensor (scope `layer`) or over all the
        update's tensors together (scope `global`); equal magnitudes by position. Nothing
        is drawn.

        Args:
            update: the update to mask; left unchanged.
            generator: unused (masking is deterministic).
            client: ignored; default None.

        Returns:
            A new update of the masked tensors, each in its own shape, dtype and device,
            with `update`'s kind, metadata and buffers.
        """
        masked = masked_by_magnitude(update.tensors, self.fraction, self.scope, self.keep_mask)
        return with_tensors(update, masked)


def _check_fraction(fraction: float) -> None:
    if not 0 <= fraction < 1:  # also rejects NaN
        raise GradleakError(f"prune fraction must be {FRACTION_RANGE}, got {fraction}")


@dataclass(frozen=True)
class Pruning(MagnitudeMask):
    """Zero the `fraction` smallest-magnitude entries, per tensor or over all tensors.

    Spelled `prune:FRACTION[:SCOPE]`. Of n entries (one tensor's, or all tensors' for scope
    `global`), exactly round(fraction · n) become zero, halves rounded up.

    Args:
        fraction: the share of entries to zero, in [0, 1) (0 keeps everything).
        scope: `PruneScope.LAYER` (or "layer", the default) ranks each tensor alone;
            `PruneScope.GLOBAL` (or "global") ranks all tensors together.

    Raises:
        GradleakError: when `fraction` is outside [0, 1) or NaN.
    """

    name: ClassVar[str] = NAME
    check_fraction = staticmethod(_check_fraction)
    keep_mask = staticmethod(_keep_mask)


M = TypeVar("M", bound=MagnitudeMask)


def parse_magnitude_mask(defense: type[M], args: list[str], usage: str, fraction_range: str) -> M:
    """`NAME:FRACTION[:SCOPE]` for the magnitude-mask defense `defense`, scope layer if unsaid.

    Args:
        defense: `Pruning` or `TopK`; its `name` prefixes the errors ("prune fraction").
        args: the arguments after the name, split on ':'.
        usage: how to spell the defense, for the error about the argument count.
        fraction_range: the allowed fractions in words, for the error about a non-number.

    Returns:
        `defense(fraction, scope)`.

    Raises:
        GradleakError: when there are not 1 or 2 arguments.
        GradleakError: when FRACTION is not a number.
        GradleakError: when FRACTION is out of `defense`'s range (its own check).
        GradleakError: when SCOPE is neither layer nor global (any case).
    """
    check_count(defense.name, args, usage, 1, 2)
    fraction = parse_number(args[0], f"{defense.name} fraction", fraction_range)
    scope = parse_choice(args[1], PruneScope, f"{defense.name} scope") if len(args) > 1 else None
    return defense(fraction, scope or PruneScope.LAYER)


def parse(args: list[str]) -> Pruning:
    """`prune:FRACTION[:SCOPE]`."""
    return parse_magnitude_mask(Pruning, args, USAGE, FRACTION_RANGE)
