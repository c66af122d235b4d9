"""iDLG, improved DLG (Zhao et al. 2020): the label read analytically, then DLG's matching."""

import dataclasses

from gradleak.attacks.dlg import DLG_CONFIG
from gradleak.attacks.gradient_matching import GradientMatchingAttack

# Same optimiser and distance as DLG; the label comes from the sign of the last layer's
# gradient (batch 1), so only the image is optimised.
IDLG_CONFIG = dataclasses.replace(DLG_CONFIG, label_strategy="analytic")


def build() -> GradientMatchingAttack:
    return GradientMatchingAttack("idlg", IDLG_CONFIG)
