"""The one interface every defense shares: a spelling, a pure update -> update map, how it
stands in a chain of defenses and what privacy it guarantees."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from gradleak.core.batch import PrivateBatch
from gradleak.core.errors import GradleakError
from gradleak.core.update import SharedUpdate
from gradleak.defenses.accounting import GaussianMechanism
from gradleak.fl.local_training import LocalTraining


@dataclass(frozen=True)
class ClientView:
    """What only the client has: its model copy (in its batch-norm mode) and its batch.

    Defenses that change how the update is computed (DP-SGD's per-sample clipping) or that
    read the client's representations (Soteria) need it; it never reaches the attacker.

    Args:
        model: the client's model, in the train/eval mode it computed the update in. The
            defenses that read it work on a copy and leave it as it was.
        batch: the client's private batch: normalised images B×C×H×W and B integer labels.
        expected_batch_size: what a mean over the batch divides by when it must not be the
            batch's own size; None (the default) divides by len(batch). Under Poisson
            sampling the size of a batch depends on who is in the data, so DP-SGD averages
            over the expected size q·N instead, as Opacus does.
        local: the client's local training (FedAvg's steps, mini-batches and rate); None
            (the default) for a client that trains none (FedSGD). DP-SGD replays it.
        start: the server's model the client's round started from (θ_start), which its
            local training began at; None (the default) when not given. DP-SGD restarts
            there to clip and noise every local step.
    """

    model: nn.Module
    batch: PrivateBatch
    expected_batch_size: int | None = None
    local: LocalTraining | None = None
    start: nn.Module | None = None

    @property
    def mean_over(self) -> int:
        """What a mean over the batch divides by: `expected_batch_size`, else len(batch)."""
        return len(self.batch) if self.expected_batch_size is None else self.expected_batch_size


@dataclass(frozen=True)
class Family:
    """Defenses that act on the same thing the same way, so a chain holds one of them.

    Two members of one family in a chain leave one of them doing (almost) nothing; the
    chain is refused with `what` they both do and `why` that is so.

    Args:
        what: what every member does, after "both" ("zero entries by magnitude").
        why: why a second one adds nothing ("the one that zeroes more leaves the other
            nothing to do").
    """

    what: str
    why: str


@dataclass(frozen=True)
class ChainRole:
    """How a defense stands among the others of a chain.

    Args:
        replaces_update: True for a defense that recomputes the update from the client's
            data and throws the incoming one away (DP-SGD): it must come first, and a chain
            holds at most one such defense.
        family: the defenses it is interchangeable with in a chain (at most one of a family
            per chain); None when any number compose (independent noise adds up).
    """

    replaces_update: bool = False
    family: Family | None = None


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

    @property
    def role(self) -> ChainRole:
        """How it composes with the other defenses of a chain (`check_chain` enforces it)."""
        ...

    @property
    def mechanism(self) -> GaussianMechanism | None:
        """The DP mechanism it runs on the client's batch each time it is applied.

        What an accountant charges for it (`accounting.privacy_spent`); None for a defense
        that gives no differential-privacy guarantee.
        """
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


def map_tensors(
    update: SharedUpdate, transform: Callable[[torch.Tensor], torch.Tensor]
) -> SharedUpdate:
    """A new update with `transform(tensor)` in place of every tensor of `update`.

    The tensors are visited in the update's order, so a transform that draws randomness
    draws in that order. Every tensor is floating point: `SharedUpdate` refuses others when
    it is made or loaded, so no defense needs its own type check.

    Args:
        update: the update to map; left unchanged.
        transform: the new value of one tensor, given the old one.

    Returns:
        A new update with the transformed tensors under the same names, in the same order,
        and `update`'s kind, metadata and buffers.
    """
    return with_tensors(update, {name: transform(t) for name, t in update.tensors.items()})


def dp_mechanisms(defenses: Sequence[Defense]) -> list[GaussianMechanism]:
    """The DP mechanisms that applying `defenses` runs on the client's batch, in order."""
    return [d.mechanism for d in defenses if d.mechanism is not None]


def check_chain(defenses: Sequence[Defense], spellings: Sequence[str] | None = None) -> None:
    """Refuse a chain in which a member would be thrown away or would change nothing.

    A defense that recomputes the update from the client's data discards what ran before
    it, so it must come first and only one may appear; two members of one family leave
    one of them doing (almost) nothing (see `ChainRole`).

    Args:
        defenses: the chain, in the order it is applied.
        spellings: how the user spelled each member, for the error; default their specs.

    Raises:
        GradleakError: when a replacing defense is not first, naming the order to give.
        GradleakError: when two replacing defenses, or two of one family, are given.
    """
    names = [s.strip() for s in spellings] if spellings is not None else [d.spec for d in defenses]
    replacing = [i for i, d in enumerate(defenses) if d.role.replaces_update]
    if len(replacing) > 1:
        first, second = (names[i] for i in replacing[:2])
        raise GradleakError(
            f"{first} and {second} both recompute the update from the client's data, so the "
            "second would throw the first away; give one of them"
        )
    if replacing and replacing[0] != 0:
        i = replacing[0]
        order = [names[i], *names[:i], *names[i + 1 :]]
        raise GradleakError(
            f"{names[i].split(':')[0].strip().lower()} recomputes the update from the client's "
            f"data, so it must come first: {' '.join(f'--defense {s}' for s in order)}"
        )
    seen: dict[Family, str] = {}
    for name, defense in zip(names, defenses, strict=True):
        family = defense.role.family
        if family is None:
            continue
        if family in seen:
            raise GradleakError(
                f"{seen[family]} and {name} both {family.what}, and {family.why}; give one of them"
            )
        seen[family] = name


# No draw reaches this many standard deviations (Gaussian and Laplacian tails there are
# below 1e-200), so noise this far below a format's largest value cannot overflow it.
NOISE_HEADROOM = 1e3


def largest_noise_std(dtype: torch.dtype) -> float:
    """The largest noise standard deviation tensors of the floating `dtype` can take."""
    return torch.finfo(dtype).max / NOISE_HEADROOM


def check_no_overflow(
    before: Mapping[str, torch.Tensor],
    after: SharedUpdate,
    error: Callable[[str, torch.Tensor], GradleakError],
) -> None:
    """Fail when a defense turned a finite entry into NaN or ±inf.

    A non-finite entry that was already non-finite in `before` is the client's, not the
    defense's, and is left for the update's own check to report.

    Args:
        before: the tensors the defense started from, by name (those of `after`).
        after: the defense's output.
        error: the one-line error for an overflow in tensor NAME, given NAME and the tensor
            the defense started from (for its dtype): it names the defense and the bound.

    Raises:
        GradleakError: `error(name, before[name])` for the first tensor that overflowed.
    """
    names = list(after.tensors)
    if not names:
        return
    overflowed = [
        (torch.isfinite(before[name]) & ~torch.isfinite(after.tensors[name])).any()
        for name in names
    ]
    # One read for all tensors: on a GPU each read waits for the device.
    for name, bad in zip(names, torch.stack(overflowed).tolist(), strict=True):
        if bad:
            raise error(name, before[name])
