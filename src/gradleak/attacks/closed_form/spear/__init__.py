"""SPEAR: exact recovery of a whole batch from a Linear + ReLU layer's gradients.

Dimitrov et al. (NeurIPS 2024). The weight gradient ∂L/∂W = G Xᵀ has rank B and factors as
L R; the unknown B×B matrix Q with G = L Q and Xᵀ = Q⁻¹ R is found column by column, since
ReLU makes every column of G sparse. `layer` holds the method step by step and runs it;
`search` looks for Q's columns, `directions` proposes them, `programs` holds the linear
programmes that vet and steer them, `certificate` checks each recovered input against the
layer's weights, `checks` what a model and batch must satisfy, `config` the options and
`attack` the registry's `spear` attack.
"""

from gradleak.attacks.closed_form.spear.attack import SpearAttack, build
from gradleak.attacks.closed_form.spear.certificate import certify
from gradleak.attacks.closed_form.spear.checks import check_batch_fits, check_relu_follows
from gradleak.attacks.closed_form.spear.config import DEFAULT_MAX_SAMPLES, SpearConfig
from gradleak.attacks.closed_form.spear.layer import SpearResult, spear_layer_input
from gradleak.attacks.closed_form.spear.programs import estimate_row, pattern_is_realizable

__all__ = [
    "DEFAULT_MAX_SAMPLES",
    "SpearAttack",
    "SpearConfig",
    "SpearResult",
    "build",
    "certify",
    "check_batch_fits",
    "check_relu_follows",
    "estimate_row",
    "pattern_is_realizable",
    "spear_layer_input",
]
