"""The one interface every defense shares: a spelling, and a pure update -> update map."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from gradleak.core.batch import PrivateBatch
from gradleak.core.errors import GradleakError
from gradleak.core.update import SharedUpdate


@dataclass(frozen=True)
class ClientView:
    """What only the client has: its model copy (in its batch-norm mode) and its batch.

    Defenses that change how the update is computed (DP-SGD's per-sample clipping) or that
    read the client's representations (Soteria) need it; it never reaches the attacker.
    """

    model: nn.Module
    batch: PrivateBatch


@runtime_checkable
class Defense(Protocol):
    """A client-side transformation of the update, applied before it is shared.

    `spec` is the canonical CLI spelling: `parse_defense(d.spec)` gives an equal defense.
    `apply` returns a new update with the same kind and metadata; it never mutates its
    input, and draws any randomness only from `generator`, so a seed repeats it. `client`
    is the client's own view (model and batch), for defenses that need more than the
    update; the others ignore it.
    """

    @property
    def spec(self) -> str: ...

    def apply(
        self,
        update: SharedUpdate,
        generator: torch.Generator,
        client: ClientView | None = None,
    ) -> SharedUpdate: ...


def require_client(client: ClientView | None, spec: str) -> ClientView:
    """The client's view, or a one-line error for a defense that cannot work without it."""
    if client is None:
        raise GradleakError(
            f"defense {spec!r} needs the client's model and batch; apply it on the client "
            "(apply_defenses(..., client=ClientView(model, batch)))"
        )
    return client


def with_tensors(update: SharedUpdate, tensors: Mapping[str, torch.Tensor]) -> SharedUpdate:
    """A new update carrying `tensors` and `update`'s kind and metadata."""
    return SharedUpdate(tensors, update.kind, update.metadata, buffers=update.buffers)


def check_floating(name: str, tensor: torch.Tensor, action: str, needs: str) -> None:
    """A one-line error for an integer update tensor given to a floating-point defense."""
    if not tensor.is_floating_point():
        raise GradleakError(
            f"cannot {action} update tensor {name!r} of type {tensor.dtype}; "
            f"{needs} needs floating-point tensors"
        )
