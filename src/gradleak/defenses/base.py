"""The one interface every defense shares: a spelling, and a pure update -> update map."""

from __future__ import annotations

from collections.abc import Callable, Mapping
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

    Args:
        model: the client's model, in the train/eval mode it computed the update in. The
            defenses that read it work on a copy and leave it as it was.
        batch: the client's private batch: normalised images B×C×H×W and B integer labels.
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
    def spec(self) -> str:
        """The canonical spelling, e.g. `noise:gaussian:0.001`; `parse_defense` reads it back."""
        ...

    def apply(
        self,
        update: SharedUpdate,
        generator: torch.Generator,
        client: ClientView | None = None,
    ) -> SharedUpdate:
        """Transform `update` into what the client shares instead.

        Args:
            update: the update as the client computed it; left unchanged.
            generator: the only source of randomness; its device is where noise is drawn.
            client: the client's model and batch, for defenses that need them; default
                None.

        Returns:
            A new update with the same tensor names, kind, metadata and buffers.

        Raises:
            GradleakError: when the defense cannot be applied (each defense lists when).
        """
        ...


def require_client(client: ClientView | None, spec: str) -> ClientView:
    """The client's view, or a one-line error for a defense that cannot work without it.

    Args:
        client: what `apply` was given as `client`.
        spec: the defense's spelling, named in the error.

    Returns:
        `client` itself.

    Raises:
        GradleakError: when `client` is None.
    """
    if client is None:
        raise GradleakError(
            f"defense {spec!r} needs the client's model and batch; apply it on the client "
            "(apply_defenses(..., client=ClientView(model, batch)))"
        )
    return client


def with_tensors(update: SharedUpdate, tensors: Mapping[str, torch.Tensor]) -> SharedUpdate:
    """A new update carrying `tensors` and `update`'s kind, metadata and buffers."""
    return SharedUpdate(tensors, update.kind, update.metadata, buffers=update.buffers)


def check_floating(name: str, tensor: torch.Tensor, action: str, needs: str) -> None:
    """A one-line error for an integer update tensor given to a floating-point defense."""
    if not tensor.is_floating_point():
        raise GradleakError(
            f"cannot {action} update tensor {name!r} of type {tensor.dtype}; "
            f"{needs} needs floating-point tensors"
        )


def map_floating(
    update: SharedUpdate,
    transform: Callable[[torch.Tensor], torch.Tensor],
    action: str,
    needs: str,
) -> SharedUpdate:
    """A new update with `transform(tensor)` in place of every tensor of `update`.

    The tensors are visited in the update's order, and each is checked to be floating
    point just before it is transformed: a transform that draws randomness draws in that
    order, and the first integer tensor stops the map before it is transformed.

    Args:
        update: the update to map; left unchanged.
        transform: the new value of one tensor, given the old one.
        action: what the defense does to a tensor, for the error ("add noise to").
        needs: the defense, for the error ("noise").

    Returns:
        A new update with the transformed tensors under the same names, in the same order,
        and `update`'s kind, metadata and buffers.

    Raises:
        GradleakError: when a tensor of `update` is not floating point, naming the first.
    """
    mapped = {}
    for name, tensor in update.tensors.items():
        check_floating(name, tensor, action, needs)
        mapped[name] = transform(tensor)
    return with_tensors(update, mapped)
