"""Models under attack, built by name or from the user's own factory, and safe checkpoint
loading."""

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
from gradleak.models.user import (
    ModelShape,
    build_user_model,
    describe_model,
    is_factory_spec,
    probe_input_shape,
)

__all__ = [
    "ModelShape",
    "available_models",
    "build_model",
    "build_user_model",
    "canonical_model_name",
    "check_checkpoint_model",
    "classifier_layer",
    "describe_model",
    "is_factory_spec",
    "is_model_name",
    "load_checkpoint",
    "probe_input_shape",
    "read_checkpoint_metadata",
    "save_checkpoint",
]
