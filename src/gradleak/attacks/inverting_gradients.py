"""Inverting Gradients (Geiping et al. 2020)."""

from gradleak.attacks.gradient_matching import GradientMatchingAttack, GradientMatchingConfig

# Cosine distance over all gradients plus total variation, Adam (lr 0.1) on the sign of the
# gradient, images boxed to valid pixels, step size ÷10 at 3/8, 5/8 and 7/8 of 24,000
# iterations, 8 restarts from a standard normal, the best kept by final matching loss.
IG_CONFIG = GradientMatchingConfig(
    objective="cosine",
    tv_weight=None,
    optimizer="adam",
    lr=0.1,
    iterations=24_000,
    restarts=8,
    signed=True,
    boxed=True,
    lr_decay=True,
    init="randn",
    label_strategy="auto",
)


def build() -> GradientMatchingAttack:
    return GradientMatchingAttack("ig", IG_CONFIG)
