"""DLG-ADMM and iDLG-ADMM: DLG and iDLG on a FedADMM increment read as a gradient.

A FedADMM client shares the increment Δ of x + π/ρ. After local SGD steps of size η the
increment is a multiple of −η × the gradients it took (twice one gradient in a first
round of one step), so −Δ/η is matched as if it were the client's gradient.
"""

import dataclasses

from gradleak.attacks.dlg import DLG_CONFIG
from gradleak.attacks.gradient_matching import GradientMatchingAttack
from gradleak.attacks.idlg import IDLG_CONFIG


def build_dlg() -> GradientMatchingAttack:
    return GradientMatchingAttack("dlg-admm", dataclasses.replace(DLG_CONFIG, admm=True))


def build_idlg() -> GradientMatchingAttack:
    return GradientMatchingAttack("idlg-admm", dataclasses.replace(IDLG_CONFIG, admm=True))
