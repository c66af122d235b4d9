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
from gradleak.defenses.arguments import check_count, parse_choice, parse_number
from gradleak.defenses.pruning import MagnitudeMask, PruneScope, pruned_count

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
    keep = torch.zeros(magnitudes.numel(), dtype=torch.bool)
    keep[order[:count]] = True
    return keep


def _check_fraction(fraction: float) -> None:
    if not 0 < fraction <= 1:  # also rejects NaN
        raise GradleakError(f"topk fraction must be {FRACTION_RANGE}, got {fraction}")


@dataclass(frozen=True)
class TopK(MagnitudeMask):
    """Keep the `fraction` largest-magnitude entries, per tensor or over all tensors."""

    name: ClassVar[str] = NAME
    check_fraction = staticmethod(_check_fraction)
    keep_mask = staticmethod(_keep_mask)


def parse(args: list[str]) -> TopK:
    """`topk:FRACTION[:SCOPE]`."""
    check_count(NAME, args, USAGE, 1, 2)
    fraction = parse_number(args[0], "topk fraction", FRACTION_RANGE)
    scope = parse_choice(args[1], PruneScope, "topk scope") if len(args) > 1 else None
    return TopK(fraction, scope or PruneScope.LAYER)
