"""Top-k sparsification: share only the largest-magnitude fraction of the entries.

With `fraction` f, exactly max(1, round(f·n)) entries keep their value (halves round up)
and the rest become zero, where n is the size of each tensor (scope `layer`) or of all
tensors together (scope `global`); an empty tensor keeps nothing. Entries are ranked by
|value|; equal magnitudes are ranked by position (the update's tensor order, then the
flat index), so the earlier one is kept first. Kept entries are unchanged bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from gradleak.core.errors import GradleakError
from gradleak.defenses.pruning import MagnitudeMask, parse_magnitude_mask, pruned_count

NAME = "topk"
USAGE = "topk:FRACTION[:SCOPE] with FRACTION in (0, 1] and SCOPE one of layer (default), global"
FRACTION_RANGE = "in (0, 1]"
HELP = "keep only the largest-magnitude fraction of entries, per tensor or across all tensors"


def kept_count(fraction: float, size: int) -> int:
    """max(1, round(fraction · size)), halves rounded up; 0 for an empty tensor."""
    return max(1, pruned_count(fraction, size)) if size else 0


def _keep_mask(magnitudes: torch.Tensor, fraction: float) -> torch.Tensor:
    """True at the kept_count largest entries of the flat `magnitudes`, ties by index."""
    count = kept_count(fraction, magnitudes.numel())
    order = torch.argsort(-magnitudes, stable=True)  # largest first, earlier first on ties
    keep = torch.zeros(magnitudes.numel(), dtype=torch.bool, device=magnitudes.device)
    keep[order[:count]] = True
    return keep


def _check_fraction(fraction: float) -> None:
    if not 0 < fraction <= 1:  # also rejects NaN
        raise GradleakError(f"topk fraction must be {FRACTION_RANGE}, got {fraction}")


@dataclass(frozen=True)
class TopK(MagnitudeMask):
    """Keep the `fraction` largest-magnitude entries, per tensor or over all tensors.

    Spelled `topk:FRACTION[:SCOPE]`. Of n entries (one tensor's, or all tensors' for scope
    `global`), exactly max(1, round(fraction · n)) keep their value, halves rounded up; an
    empty tensor keeps nothing.

    Args:
        fraction: the share of entries to keep, in (0, 1] (1 keeps everything).
        scope: `PruneScope.LAYER` (or "layer", the default) ranks each tensor alone;
            `PruneScope.GLOBAL` (or "global") ranks all tensors together.

    Raises:
        GradleakError: when `fraction` is outside (0, 1] or NaN.
    """

    name: ClassVar[str] = NAME
    check_fraction = staticmethod(_check_fraction)
    keep_mask = staticmethod(_keep_mask)


def parse(args: list[str]) -> TopK:
    """`topk:FRACTION[:SCOPE]`."""
    return parse_magnitude_mask(TopK, args, USAGE, FRACTION_RANGE)
