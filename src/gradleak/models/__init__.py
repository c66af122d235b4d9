"""Models under attack, built by name, and safe checkpoint loading."""

from gradleak.models.checkpoint import load_checkpoint, save_checkpoint
from gradleak.models.registry import available_models, build_model, classifier_layer

__all__ = [
    "available_models",
    "build_model",
    "classifier_layer",
    "load_checkpoint",
    "save_checkpoint",
]
