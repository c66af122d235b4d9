"""Models under attack, built by name, and safe checkpoint loading."""

from gradleak.models.checkpoint import (
    check_checkpoint_model,
    load_checkpoint,
    read_checkpoint_metadata,
    save_checkpoint,
)
from gradleak.models.registry import (
    available_models,
    build_model,
    canonical_model_name,
    classifier_layer,
    is_model_name,
)

__all__ = [
    "available_models",
    "build_model",
    "canonical_model_name",
    "check_checkpoint_model",
    "classifier_layer",
    "is_model_name",
    "load_checkpoint",
    "read_checkpoint_metadata",
    "save_checkpoint",
]
