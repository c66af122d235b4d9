"""Client-side defenses applied to an update before it is shared, and their composition."""

from gradleak.defenses.accounting import GaussianMechanism, dp_epsilon, privacy_spent
from gradleak.defenses.base import ChainRole, ClientView, Defense, dp_mechanisms, require_client
from gradleak.defenses.dpsgd import DPSGD
from gradleak.defenses.noise import AdditiveNoise, NoiseKind
from gradleak.defenses.precision import LowPrecision, PrecisionKind
from gradleak.defenses.pruning import PruneScope, Pruning
from gradleak.defenses.registry import (
    DEFENSES,
    apply_defenses,
    available_defenses,
    parse_defense,
    parse_defenses,
)
from gradleak.defenses.soteria import Soteria
from gradleak.defenses.sparsify import TopK

__all__ = [
    "DEFENSES",
    "AdditiveNoise",
    "ChainRole",
    "ClientView",
    "DPSGD",
    "Defense",
    "GaussianMechanism",
    "LowPrecision",
    "NoiseKind",
    "PrecisionKind",
    "PruneScope",
    "Pruning",
    "Soteria",
    "TopK",
    "apply_defenses",
    "available_defenses",
    "dp_epsilon",
    "dp_mechanisms",
    "parse_defense",
    "parse_defenses",
    "privacy_spent",
    "require_client",
]
