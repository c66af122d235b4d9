"""The one interface every defense shares: a spelling, and a pure update -> update map."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import torch

from gradleak.fl.update import SharedUpdate


@runtime_checkable
class Defense(Protocol):
    """A client-side transformation of the update, applied before it is shared.

    `spec` is the canonical CLI spelling: `parse_defense(d.spec)` gives an equal defense.
    `apply` returns a new update with the same kind and metadata; it never mutates its
    input, and draws any randomness only from `generator`, so a seed repeats it.
    """

    @property
    def spec(self) -> str: ...

    def apply(self, update: SharedUpdate, generator: torch.Generator) -> SharedUpdate: ...


def with_tensors(update: SharedUpdate, tensors: Mapping[str, torch.Tensor]) -> SharedUpdate:
    """A new update carrying `tensors` and `update`'s kind and metadata."""
    return SharedUpdate(tensors, update.kind, update.metadata)
