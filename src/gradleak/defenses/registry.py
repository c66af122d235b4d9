"""Defenses by name, parsed from their CLI spelling `NAME[:ARG[:ARG]]`, and composed.

A new defense is one module (a class with `spec`, `role`, `mechanism` and `apply`, and a
`parse(args)`) plus one line here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

import torch

from gradleak.core.errors import GradleakError
from gradleak.core.update import SharedUpdate
from gradleak.defenses import dpsgd, noise, precision, pruning, soteria, sparsify
from gradleak.defenses.base import ClientView, Defense, check_chain

NONE = "none"


class DefenseEntry(NamedTuple):
    parse: Callable[[list[str]], Defense]  # the arguments after the name, split on ':'
    help: str  # one line
    usage: str  # how to spell it, for help text and errors


DEFENSES: dict[str, DefenseEntry] = {
    noise.NAME: DefenseEntry(noise.parse, noise.HELP, noise.USAGE),
    pruning.NAME: DefenseEntry(pruning.parse, pruning.HELP, pruning.USAGE),
    sparsify.NAME: DefenseEntry(sparsify.parse, sparsify.HELP, sparsify.USAGE),
    precision.NAME: DefenseEntry(precision.parse, precision.HELP, precision.USAGE),
    dpsgd.NAME: DefenseEntry(dpsgd.parse, dpsgd.HELP, dpsgd.USAGE),
    soteria.NAME: DefenseEntry(soteria.parse, soteria.HELP, soteria.USAGE),
}


def available_defenses() -> list[str]:
    """One spelling hint per defense, `none` first, for help text.

    Returns:
        `"none (no defense)"`, then each defense's usage line (e.g. "noise:KIND:VARIANCE
        with KIND one of gaussian, laplacian (e.g. noise:gaussian:1e-3)"), in registry order.
    """
    return [f"{NONE} (no defense)", *(entry.usage for entry in DEFENSES.values())]


def parse_defense(spec: str) -> Defense:
    """The defense spelled `spec`, e.g. `noise:gaussian:1e-3` or `prune:0.3:global`.

    The name is matched case-insensitively; blanks around the name and each argument are
    ignored. `none` is not a defense here: `parse_defenses` handles it.

    Args:
        spec: `NAME[:ARG[:ARG...]]`, with NAME one of `DEFENSES` and the arguments that
            defense takes (see `available_defenses`).

    Returns:
        The defense, equal to `parse_defense(defense.spec)`.

    Raises:
        GradleakError: when `spec` is not a string or is blank.
        GradleakError: when NAME is not a known defense.
        GradleakError: when the arguments do not suit that defense (count, number, range).
    """
    if not isinstance(spec, str) or not spec.strip():
        raise GradleakError(
            f"a defense must be spelled NAME[:ARGS] with NAME one of: {', '.join(DEFENSES)}, "
            f"got {spec!r}"
        )
    name, *args = (part.strip() for part in spec.strip().split(":"))
    try:
        entry = DEFENSES[name.lower()]
    except KeyError:
        raise GradleakError(
            f"unknown defense {name!r} in {spec!r}; choose one of: {', '.join(DEFENSES)}"
            f" (or {NONE!r} alone)"
        ) from None
    return entry.parse(args)


def parse_defenses(specs: Iterable[str] | str | None) -> list[Defense]:
    """The defenses spelled `specs`, in order; `none`, an empty list or None give none.

    Args:
        specs: one spelling, several (applied in the given order), `"none"` (any case), or
            None.

    Returns:
        One defense per spelling, in order; an empty list for None, `none` or no specs.

    Raises:
        GradleakError: when `none` is given together with other defenses.
        GradleakError: when a spelling is not a valid defense (see `parse_defense`).
        GradleakError: when a member would be thrown away or change nothing: a defense that
            recomputes the update from the client's data given after another, or two of
            them, or two of one family (see `check_chain`).
    """
    if specs is None:
        return []
    specs = [specs] if isinstance(specs, str) else list(specs)
    if [s.strip().lower() for s in specs] == [NONE]:
        return []
    if any(s.strip().lower() == NONE for s in specs):
        raise GradleakError(
            f"defense {NONE!r} cannot be combined with other defenses, got {specs}; "
            f"give {NONE!r} alone or drop it"
        )
    defenses = [parse_defense(spec) for spec in specs]
    check_chain(defenses, specs)
    return defenses


def apply_defenses(
    update: SharedUpdate,
    defenses: Sequence[Defense],
    generator: torch.Generator,
    client: ClientView | None = None,
) -> SharedUpdate:
    """Apply `defenses` to `update` in the given order; the input update is left as it was.

    Each defense gets the previous one's output, the same `generator` (so the draws follow
    one another and one seed repeats the whole chain) and the same `client`. The chain is
    checked as `parse_defenses` checks it, so one built by hand loses no member either.

    Args:
        update: the update as the client computed it.
        defenses: the defenses to apply, first to last; empty returns `update` itself.
        generator: the source of every defense's randomness.
        client: the client's model and batch, for defenses that need them (DP-SGD,
            Soteria); default None.

    Returns:
        The update after the last defense.

    Raises:
        GradleakError: when the chain is refused (see `check_chain`).
        GradleakError: when a defense cannot be applied (see that defense's `apply`).
    """
    check_chain(defenses)
    for defense in defenses:
        update = defense.apply(update, generator, client)
    return update
