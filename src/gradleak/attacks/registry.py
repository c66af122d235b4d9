"""Attacks by name: a new attack is one module plus one line here."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

from gradleak.attacks import learned, presets
from gradleak.attacks.base import Attack, modifies_model
from gradleak.attacks.closed_form import analytic, rgap, spear
from gradleak.attacks.malicious import imprint
from gradleak.attacks.text import presets as text_presets
from gradleak.attacks.text import span, tokens
from gradleak.core.errors import GradleakError
from gradleak.core.update import UpdateKind
from gradleak.fl.protocols import protocols_read_by

ATTACKS: dict[str, tuple[Callable[[], Attack], str]] = {
    "dlg": (presets.dlg, "DLG: L2 matching, joint soft labels, L-BFGS (Zhu et al. 2019)"),
    "idlg": (presets.idlg, "iDLG: analytic label, then DLG matching (Zhao et al. 2020)"),
    "dlg-admm": (
        presets.dlg_admm,
        "DLG-ADMM: DLG on a FedADMM increment Δ, replaying the client's ADMM round (local "
        "steps from its x and π, dual step) and matching −Δ'/η with −Δ/η; --admm-reading "
        "gradient matches −Δ/η with one plain gradient instead",
    ),
    "idlg-admm": (
        presets.idlg_admm,
        "iDLG-ADMM: the analytic label, then DLG-ADMM's matching (--admm-reading as dlg-admm)",
    ),
    "analytic": (
        analytic.build,
        "Analytic: the input of an MLP's first Linear from ∇W/∇b, exact for batch 1 "
        "(Geiping et al. 2020); larger batches give mixtures",
    ),
    "spear": (
        spear.build,
        "SPEAR: a whole batch exactly from an MLP's first Linear + ReLU (low-rank gradient, "
        "sparse columns), each image certified by its ReLU pattern (Dimitrov et al. 2024)",
    ),
    "imprint": (
        imprint.build,
        "Robbing the Fed: a malicious server puts an imprint layer of --bins neurons before "
        "its model; each image in a bin of its own is read back exactly, under FedSGD, "
        "FedAvg or aggregation (Fowl et al. 2022); needs --malicious-server",
    ),
    "ig": (
        presets.ig,
        "Inverting Gradients: cosine + TV, signed Adam, restarts (Geiping et al. 2020)",
    ),
    "rgap": (
        rgap.build,
        "R-GAP: a conv stack's input solved layer by layer from its gradients, batch 1 "
        "(Zhu & Blaschko 2021)",
    ),
    "tokens": (
        tokens.build,
        "text: the batch's token set from the non-zero rows of the word-embedding update "
        "(exact when the embeddings are trained); no order",
    ),
    "dlg-text": (
        text_presets.dlg_text,
        "text: DLG on the input embeddings (L2, L-BFGS), each position read back as its "
        "nearest leaked token (Zhu et al. 2019)",
    ),
    "tag": (
        text_presets.tag,
        "text: TAG, dlg-text with an L2 + α·L1 gradient distance (Deng et al. 2021)",
    ),
    "span": (
        span.build,
        "text: exact recovery from the span of the first attention layer's inputs, whole "
        "sentences certified against its feed-forward inputs' span (DAGER, Petrov et al. 2024)",
    ),
}


class ArgumentAttack(NamedTuple):
    """An attack whose name carries an argument after a colon, e.g. learned:INV.pt.

    Attributes:
        factory: builds the attack from the argument.
        argument: how the argument is spelled in help texts (e.g. "PATH").
        description: what the attack does, in one line.
        modalities: the kinds of data it attacks.
    """

    factory: Callable[[str], Attack]
    argument: str
    description: str
    modalities: tuple[str, ...] = ("image",)


ATTACKS_WITH_ARGUMENT: dict[str, ArgumentAttack] = {
    "learned": ArgumentAttack(
        learned.build,
        "PATH",
        "Learned inversion: a network trained by gradleak train-inverter maps the update "
        "to the images in one forward pass, for the one server model, batch size and "
        "protocol it was trained on (Wu et al. 2023)",
    ),
}


# The attacks of text models; every other attack attacks images.
TEXT_ATTACKS = frozenset({"tokens", "dlg-text", "tag", "span"})


def split_attack_name(name: str) -> tuple[str, str | None]:
    """An attack's name split at its first colon: ("learned", "INV.pt") for "learned:INV.pt".

    Args:
        name: an attack's name as given.

    Returns:
        (base, argument): argument None for a name without a colon.
    """
    base, colon, argument = name.partition(":")
    return (base, argument) if colon else (name, None)


def spelled_attacks() -> dict[str, str]:
    """Every attack as it is spelled, with its description: the plain names, then the
    argument-taking ones as NAME:ARG (e.g. learned:PATH)."""
    plain = {name: text for name, (_, text) in ATTACKS.items()}
    taking = {f"{n}:{a.argument}": a.description for n, a in ATTACKS_WITH_ARGUMENT.items()}
    return {**plain, **taking}


def attack_modalities(name: str) -> tuple[str, ...] | None:
    """The kinds of data the attack `name` attacks ("image" or "text"); None if unknown."""
    base, argument = split_attack_name(name)
    if base in ATTACKS_WITH_ARGUMENT:
        return ATTACKS_WITH_ARGUMENT[base].modalities
    if argument is not None or name not in ATTACKS:
        return None
    return ("text",) if name in TEXT_ATTACKS else ("image",)


class AttackChoices:
    """The `--attack` choices: the plain names, and any NAME:ARG of an argument-taking attack.

    Iterating gives the plain names (the usual argparse listing); membership also accepts
    the argument-taking attacks' names, whose argument `get` checks with a one-line error.
    """

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        base, argument = split_attack_name(name)
        return base in ATTACKS_WITH_ARGUMENT or (argument is None and name in ATTACKS)

    def __iter__(self) -> Iterator[str]:
        return iter(ATTACKS)

    def __len__(self) -> int:
        return len(ATTACKS)


def attack_label(name: str) -> str:
    """The attack's name as a file name may hold it: learned:DIR/INV.pt → learned-INV."""
    base, argument = split_attack_name(name)
    if argument is None:
        return name
    stem = "".join(c if c.isalnum() or c in "-_." else "-" for c in Path(argument).stem)
    return f"{base}-{stem}" if stem else base


def available() -> list[str]:
    """The names of every attack, in registry order.

    Returns:
        The names `get` accepts: dlg, idlg, dlg-admm, idlg-admm, analytic, spear, imprint,
        ig, rgap, and the text attacks tokens, dlg-text, tag, span.
    """
    return list(ATTACKS)


def get(name: str) -> Attack:
    """The named attack with its paper's defaults.

    Every call builds a new attack; change its settings with `with_options`.

    Args:
        name: one of `available()` (exact spelling, e.g. "ig"), or an argument-taking
            attack with its argument, e.g. "learned:INV.pt" (`ATTACKS_WITH_ARGUMENT`).

    Returns:
        The attack, configured as its preset says (see `presets.py`, `analytic.py`,
        `rgap.py` and `learned.py`).

    Raises:
        GradleakError: when no attack has that name, an argument-taking attack lacks its
            argument or a plain one is given one (the message lists the choices), or the
            attack refuses its argument (e.g. a missing inverter file).
    """
    base, argument = split_attack_name(name)
    if base in ATTACKS_WITH_ARGUMENT:
        entry = ATTACKS_WITH_ARGUMENT[base]
        if not argument:
            raise GradleakError(
                f"attack {base!r} needs its {entry.argument}: --attack {base}:{entry.argument}"
            )
        return entry.factory(argument)
    if argument is not None and base in ATTACKS:
        raise GradleakError(f"attack {base!r} takes no argument; drop ':{argument}'")
    try:
        factory, _ = ATTACKS[name]
    except KeyError:
        raise GradleakError(
            f"unknown attack {name!r}; choose one of: {', '.join(spelled_attacks())}"
        ) from None
    return factory()


def readers_of(kind: UpdateKind) -> list[str]:
    """The attacks that can attack an update of `kind`, in registry order.

    Args:
        kind: the kind of a shared update.

    Returns:
        The names of the attacks whose `reads` include `kind` (e.g. for a FedADMM
        increment: dlg-admm and idlg-admm), leaving out those that alter the model before
        the update exists (imprint).
    """
    # An attack that alters the model first is no answer for an update already shared.
    built = {name: get(name) for name in ATTACKS}
    return [n for n, a in built.items() if kind in a.reads and not modifies_model(a)]


def check_readable(name: str, reads: frozenset[UpdateKind], kind: UpdateKind) -> None:
    """Refuse, in one line, an update of a kind the attack `name` cannot read.

    Args:
        name: the attack's name, for the message.
        reads: the kinds of update the attack reads (its `reads`).
        kind: the kind of the update it was given.

    Raises:
        GradleakError: naming the attacks that read `kind` and the protocols that share
            what `name` reads.
    """
    if kind in reads:
        return
    readers = " or ".join(readers_of(kind))
    protocols = " or ".join(p.name for p in protocols_read_by(reads))
    raise GradleakError(
        f"attack '{name}' reads {_words(reads)} but the update is {kind.noun}; use "
        f"{readers}, or --protocol {protocols}"
    )


def _words(kinds: frozenset[UpdateKind]) -> str:
    return " and ".join(k.description for k in UpdateKind if k in kinds)
