"""Which attacks an audit runs, and with what settings, for a given model and protocol.

Each candidate is one row of `CANDIDATES`: the registry attack, why an engineer should care
about it, its share of the time budget, when it applies and the options the audit gives it.
A candidate that does not apply is reported with the reason, never silently dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from gradleak import attacks
from gradleak.attacks.base import ModelChecked
from gradleak.attacks.matching.priors import batch_norm_layers
from gradleak.attacks.registry import check_readable
from gradleak.core.errors import GradleakError
from gradleak.core.knowledge import Knowledge
from gradleak.core.update import UpdateKind
from gradleak.studies.audit.labels import LabelReading

# DLG's L-BFGS costs about twenty double-backward passes a step: beyond this many parameters
# it does not get anywhere within an audit's budget, and IG covers the model instead.
DLG_MAX_PARAMETERS = 500_000


@dataclass(frozen=True)
class AuditTarget:
    """What the selection looks at: the server's model and view, and what is shared.

    Attributes:
        model: the server's model.
        knowledge: what the threat model grants (batch size, users, modality, ...).
        kind: the kind of update the clients share.
        priors: the image priors the user asked IG to use (empty: the audit chooses).
    """

    model: nn.Module
    knowledge: Knowledge
    kind: UpdateKind
    priors: tuple[str, ...] = ()


@dataclass(frozen=True)
class Candidate:
    """One attack an audit may run.

    Attributes:
        attack: the registry name.
        modality: the kind of data it attacks (the others' audits do not list it).
        purpose: why it is in the audit, in a few words.
        weight: its share of the time budget relative to the others (0: a closed form that
            takes no budget to speak of).
        make: builds the attack where it is not a registry attack (the label reading).
        applies: the target → None when the audit should run the attack, else the reason
            it should not; the attack's own `check_model` and the update kinds it reads
            are checked as well.
        options: the target → the attack's options in the audit.
    """

    attack: str
    modality: str
    purpose: str
    weight: float
    applies: Callable[[AuditTarget], str | None]
    options: Callable[[AuditTarget], Mapping[str, Any]]
    make: Callable[[], Any] | None = None  # None: the registry's attack of that name


def _always(target: AuditTarget) -> str | None:
    return None


def _dlg_applies(target: AuditTarget) -> str | None:
    count = sum(p.numel() for p in target.model.parameters())
    if count > DLG_MAX_PARAMETERS:
        return f"the model has {count:,} parameters (DLG is run up to {DLG_MAX_PARAMETERS:,})"
    return None


# SPEAR's sample budget in an audit, enough for the batches it certifies (B = 24 on a
# 256-unit layer needs about 2,000 samples); the runner also holds it to a share of the
# time budget (`runner.CLOSED_FORM_SHARE`), since closed forms run before the rest.
AUDIT_SPEAR_SAMPLES = 5_000


def _spear_options(target: AuditTarget) -> Mapping[str, Any]:
    return {"max_samples": AUDIT_SPEAR_SAMPLES}


def _spear_applies(target: AuditTarget) -> str | None:
    if target.knowledge.batch_size == 1:
        return "one sample per update: the analytic attack reads it in closed form"
    return None


def label_strategy(target: AuditTarget) -> str:
    """The strongest label reading for the update: iDLG's for one sample, counts from a
    gradient for several, else labels optimised with the images."""
    if target.knowledge.batch_size == 1:
        return "analytic"
    if target.kind is UpdateKind.GRADIENT:
        return "count"
    return "optimize"


def strongest_priors(target: AuditTarget) -> tuple[str, ...]:
    """IG's priors: the user's, else batch-norm statistics where the model has batch norm
    (the client's where it shares them, else the server's), else total variation."""
    if target.priors:
        return target.priors
    if batch_norm_layers(target.model) and target.knowledge.model_mode == "train":
        return ("tv", "bn")
    return ("tv",)


def _ig_options(target: AuditTarget) -> Mapping[str, Any]:
    # One trial per update: within a fixed budget the preset's 8 restarts would each get an
    # eighth of the iterations, and a short IG run is far from converged.
    return {
        "priors": strongest_priors(target),
        "label_strategy": label_strategy(target),
        "restarts": 1,
    }


def _dlg_options(target: AuditTarget) -> Mapping[str, Any]:
    # DLG's own soft labels for batches of updates it cannot count; the strongest reading
    # where one applies (iDLG's label for one sample, as the paper that followed DLG).
    strategy = label_strategy(target)
    return {} if strategy == "optimize" else {"label_strategy": strategy}


def _no_options(target: AuditTarget) -> Mapping[str, Any]:
    return {}


def _labels_apply(target: AuditTarget) -> str | None:
    if label_strategy(target) == "optimize":
        return (
            "the labels of a batch's weight change are not read in closed form; DLG and IG "
            "optimise them with the images"
        )
    return None


def _label_options(target: AuditTarget) -> Mapping[str, Any]:
    return {"label_strategy": label_strategy(target)}


CANDIDATES: tuple[Candidate, ...] = (
    Candidate(
        "labels",
        "image",
        "label recovery alone, from the update's last layer",
        0.0,
        _labels_apply,
        _label_options,
        LabelReading,
    ),
    Candidate(
        "analytic",
        "image",
        "closed form: exact input of a first Linear layer",
        0.0,
        _always,  # the attack's own check_model says whether a Linear reads the image
        _no_options,
    ),
    Candidate(
        "spear",
        "image",
        "closed form: a whole batch through a first Linear + ReLU, certified (SPEAR)",
        0.0,
        _spear_applies,  # and its check_model: a first Linear + ReLU reading the image
        _spear_options,
    ),
    Candidate(
        "dlg",
        "image",
        "DLG: L-BFGS gradient matching on small models",
        1.0,
        _dlg_applies,
        _dlg_options,
    ),
    Candidate(
        "ig",
        "image",
        "Inverting Gradients with the strongest available prior",
        2.0,
        _always,
        _ig_options,
    ),
    Candidate(
        "tokens",
        "text",
        "the batch's words from the embedding update",
        0.0,
        _always,
        _no_options,
    ),
    Candidate(
        "span",
        "text",
        "exact sentences from the first attention layer's span (DAGER)",
        1.0,
        _always,
        _no_options,
    ),
)


@dataclass(frozen=True)
class Selected:
    """A candidate as the audit will run it, or why it will not.

    Attributes:
        candidate: the candidate.
        attack: the configured attack (None where it does not apply).
        reason: why it does not apply (None where it does).
    """

    candidate: Candidate
    attack: attacks.Attack | None
    reason: str | None = None


def candidate_names() -> tuple[str, ...]:
    """The attacks an audit can run, in the order it runs them."""
    return tuple(c.attack for c in CANDIDATES)


def check_attack_names(names: Sequence[str]) -> tuple[str, ...]:
    """`names`, checked against the audit's candidates (one line naming them otherwise).

    Raises:
        GradleakError: a name that is not one of `candidate_names`.
    """
    known = candidate_names()
    for name in names:
        if name not in known:
            raise GradleakError(
                f"--attacks: {name!r} is not an attack the audit runs; choose from: "
                f"{', '.join(known)}"
            )
    return tuple(names)


def select_attacks(target: AuditTarget, only: Sequence[str] = ()) -> list[Selected]:
    """Every candidate, configured for `target` or with the reason it does not apply.

    Args:
        target: the server's model and view and the kind of update shared.
        only: the candidates to run (empty: all that apply); the others are reported as
            not chosen.

    Returns:
        One entry per candidate of `CANDIDATES` for the target's kind of data, in order.
    """
    chosen = []
    for candidate in CANDIDATES:
        if candidate.modality != target.knowledge.modality:
            continue
        reason = candidate.applies(target)
        if only and candidate.attack not in only:
            reason = "not chosen (--attacks)"
        attack = None
        if reason is None:
            try:
                made = attacks.get(candidate.attack) if candidate.make is None else candidate.make()
                attack = made.with_options(candidate.options(target))
                check_readable(candidate.attack, attack.reads, target.kind)
                if isinstance(attack, ModelChecked):  # an attack that serves only some models
                    knowledge = target.knowledge
                    attack.check_model(target.model, knowledge.data_shape, knowledge.batch_size)
            except GradleakError as exc:
                attack, reason = None, str(exc)
        chosen.append(Selected(candidate, attack, reason))
    return chosen
