"""Client-side defenses applied to an update before it is shared, and their composition."""

from gradleak.defenses.base import ClientView, Defense, require_client
from gradleak.defenses.noise import AdditiveNoise, NoiseKind
from gradleak.defenses.pruning import PruneScope, Pruning
from gradleak.defenses.registry import (
    DEFENSES,
    apply_defenses,
    available_defenses,
    parse_defense,
    parse_defenses,
)

__all__ = [
    "DEFENSES",
    "AdditiveNoise",
    "ClientView",
    "Defense",
    "NoiseKind",
    "PruneScope",
    "Pruning",
    "apply_defenses",
    "available_defenses",
    "parse_defense",
    "parse_defenses",
    "require_client",
]
