"""DLG, Deep Leakage from Gradients (Zhu et al. 2019)."""

from gradleak.attacks.gradient_matching import GradientMatchingAttack, GradientMatchingConfig

# The reference setting: squared-L2 gradient distance, images and soft labels drawn from a
# standard normal and optimised jointly by L-BFGS (lr 1, 20 inner iterations) for 300 steps.
# One deliberate change: a strong-Wolfe line search. The reference's fixed unit step diverges
# to NaN on some images (docs/RESULTS.md measures both); `line_search: none` restores it.
DLG_CONFIG = GradientMatchingConfig(
    objective="l2",
    tv_weight=0.0,
    optimizer="lbfgs",
    lr=1.0,
    iterations=300,
    restarts=1,
    signed=False,
    boxed=False,
    lr_decay=False,
    init="randn",
    label_strategy="optimize",
    lbfgs_inner_iterations=20,
    line_search="strong_wolfe",
    tolerance=0.0,
    log_every=1,
)


def build() -> GradientMatchingAttack:
    return GradientMatchingAttack("dlg", DLG_CONFIG)
