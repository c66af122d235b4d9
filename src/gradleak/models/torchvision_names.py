"""torchvision's ResNet-18 state-dict names, read into gradleak's `resnet18` (`ResNet18`).

gradleak's ResNet-18 is torchvision's layer for layer; two names differ. A block's 1x1
conv + BN shortcut is `shortcut` here and `downsample` there, and the output layer is
`classifier` here and `fc` there. `NAME_TABLE` maps one naming onto the other, so a state
dict saved from `torchvision.models.resnet18()` (or its published weights) loads into
`build_model("resnet18", ...)` without torchvision. torchvision's published weight files
predate batch norm's `num_batches_tracked` counters; missing ones start at 0, as torch's
own loading does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import nn

from gradleak.models.resnet_imagenet import ResNet18

# (torchvision's pattern, gradleak's replacement); every other name is the same in both.
NAME_TABLE: tuple[tuple[str, str], ...] = (
    (r"(layer[1-4]\.\d+)\.downsample\.([01])\.(\w+)", r"\1.shortcut.\2.\3"),
    (r"fc\.(weight|bias)", r"classifier.\1"),
)
# The inverse: gradleak's pattern and torchvision's replacement.
_INVERSE: tuple[tuple[str, str], ...] = (
    (r"(layer[1-4]\.\d+)\.shortcut\.([01])\.(\w+)", r"\1.downsample.\2.\3"),
    (r"classifier\.(weight|bias)", r"fc.\1"),
)
# Names only torchvision's naming has, and only gradleak's: which one a state dict uses.
_TORCHVISION_MARK = "fc.weight"
_GRADLEAK_MARK = "classifier.weight"
_COUNTER = "num_batches_tracked"


def _rename(name: str, table: tuple[tuple[str, str], ...]) -> str:
    for pattern, replacement in table:
        renamed, count = re.subn(rf"^{pattern}$", replacement, name)
        if count:
            return renamed
    return name


def from_torchvision_name(name: str) -> str:
    """gradleak's name for torchvision's ResNet-18 parameter or buffer `name`."""
    return _rename(name, NAME_TABLE)


def to_torchvision_name(name: str) -> str:
    """torchvision's name for gradleak's ResNet-18 parameter or buffer `name`."""
    return _rename(name, _INVERSE)


def is_torchvision_resnet(state: Mapping[str, object]) -> bool:
    """Whether a state dict uses torchvision's ResNet naming (an `fc` output layer)."""
    return _TORCHVISION_MARK in state and _GRADLEAK_MARK not in state


def from_torchvision(
    state: Mapping[str, torch.Tensor], model: nn.Module | None = None
) -> dict[str, torch.Tensor]:
    """A torchvision ResNet-18 state dict in gradleak's names.

    Args:
        state: the state dict, torchvision's names.
        model: the model it is for; where given, its batch-norm counters that the state
            dict lacks (torchvision's published weights have none) are added as 0.

    Returns:
        The same tensors under gradleak's names (the order of `state`).
    """
    renamed = {from_torchvision_name(name): tensor for name, tensor in state.items()}
    if model is not None:
        for name, buffer in model.state_dict().items():
            if name.endswith(_COUNTER) and name not in renamed:
                renamed[name] = torch.zeros_like(buffer)
    return renamed


def to_torchvision(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """gradleak's ResNet-18 state dict in torchvision's names (for torchvision users)."""
    return {to_torchvision_name(name): tensor for name, tensor in state.items()}


def adapt_state(model: nn.Module, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict in the model's own naming, where it comes from torchvision's.

    Args:
        model: the model it is loaded into.
        state: the state dict as read.

    Returns:
        For a gradleak `ResNet18` and a state dict in torchvision's names: the renamed
        state (`from_torchvision`); otherwise `state` unchanged (as a dict).
    """
    for kind, recognise, rename in _FOREIGN_NAMINGS:
        if isinstance(model, kind) and recognise(state):
            return rename(state, model)
    return dict(state)


# Other libraries' namings gradleak reads: (model class, test of a state dict, renaming).
_FOREIGN_NAMINGS = ((ResNet18, is_torchvision_resnet, from_torchvision),)
