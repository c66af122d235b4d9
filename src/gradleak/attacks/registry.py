"""Attacks by name: a new attack is one module plus one line here."""

from __future__ import annotations

from collections.abc import Callable

from gradleak.attacks import presets
from gradleak.attacks.base import Attack
from gradleak.attacks.closed_form import analytic, rgap
from gradleak.core.errors import GradleakError

ATTACKS: dict[str, tuple[Callable[[], Attack], str]] = {
    "dlg": (presets.dlg, "DLG: L2 matching, joint soft labels, L-BFGS (Zhu et al. 2019)"),
    "idlg": (presets.idlg, "iDLG: analytic label, then DLG matching (Zhao et al. 2020)"),
    "dlg-admm": (
        presets.dlg_admm,
        "DLG-ADMM: DLG on −Δ/η of a FedADMM increment Δ (a first round of one step gives "
        "Δ = −2η∇f: --guess-local-lr 2η matches it)",
    ),
    "idlg-admm": (presets.idlg_admm, "iDLG-ADMM: iDLG on −Δ/η of a FedADMM increment Δ"),
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
}


def available() -> list[str]:
    return list(ATTACKS)


def get(name: str) -> Attack:
    """The named attack with its paper's defaults."""
    try:
        factory, _ = ATTACKS[name]
    except KeyError:
        raise GradleakError(
            f"unknown attack {name!r}; choose one of: {', '.join(ATTACKS)}"
        ) from None
    return factory()
