"""Attacks by name: a new attack is one module plus one line here."""

from __future__ import annotations

from collections.abc import Callable

from gradleak.attacks import presets
from gradleak.attacks.base import Attack
from gradleak.attacks.closed_form import analytic, rgap
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


# The attacks of text models; every other attack attacks images.
TEXT_ATTACKS = frozenset({"tokens", "dlg-text", "tag", "span"})


def attack_modalities(name: str) -> tuple[str, ...] | None:
    """The kinds of data the attack `name` attacks ("image" or "text"); None if unknown."""
    if name not in ATTACKS:
        return None
    return ("text",) if name in TEXT_ATTACKS else ("image",)


def available() -> list[str]:
    """The names of every attack, in registry order.

    Returns:
        The names `get` accepts: dlg, idlg, dlg-admm, idlg-admm, analytic, ig, rgap, and
        the text attacks tokens, dlg-text, tag, span.
    """
    return list(ATTACKS)


def get(name: str) -> Attack:
    """The named attack with its paper's defaults.

    Every call builds a new attack; change its settings with `with_options`.

    Args:
        name: one of `available()` (exact spelling, e.g. "ig").

    Returns:
        The attack, configured as its preset says (see `presets.py`, `analytic.py` and
        `rgap.py`).

    Raises:
        GradleakError: when no attack has that name (the message lists the choices).
    """
    try:
        factory, _ = ATTACKS[name]
    except KeyError:
        raise GradleakError(
            f"unknown attack {name!r}; choose one of: {', '.join(ATTACKS)}"
        ) from None
    return factory()


def readers_of(kind: UpdateKind) -> list[str]:
    """The attacks that can attack an update of `kind`, in registry order.

    Args:
        kind: the kind of a shared update.

    Returns:
        The names of the attacks whose `reads` include `kind` (e.g. for a FedADMM
        increment: dlg-admm and idlg-admm).
    """
    return [name for name in ATTACKS if kind in get(name).reads]


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
