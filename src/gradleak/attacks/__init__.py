"""Attacks that reconstruct private inputs and labels from shared updates."""

from gradleak.attacks.base import Attack
from gradleak.attacks.gradient_matching import GradientMatchingAttack, GradientMatchingConfig
from gradleak.attacks.reconstruction import Reconstruction
from gradleak.attacks.registry import available, get

__all__ = [
    "Attack",
    "GradientMatchingAttack",
    "GradientMatchingConfig",
    "Reconstruction",
    "available",
    "get",
]
