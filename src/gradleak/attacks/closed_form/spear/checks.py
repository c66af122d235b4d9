"""What SPEAR needs of a model and batch: a ReLU after the Linear layer, B within its size."""

from __future__ import annotations

from torch import nn

from gradleak.attacks.closed_form.probe import probe_layer
from gradleak.core.errors import GradleakError


def check_batch_fits(layer: nn.Linear, batch_size: int) -> None:
    """Refuse a batch the layer cannot separate: B must not exceed its width or input size.

    Raises:
        GradleakError: naming the limit and the batch size to use instead.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise GradleakError(f"batch size must be a positive integer, got {batch_size!r}")
    limit = min(layer.out_features, layer.in_features)
    if batch_size > limit:
        raise GradleakError(
            f"the spear attack separates at most min(width, inputs) = {limit} samples at a "
            f"{layer.in_features}→{layer.out_features} Linear layer, but the batch has "
            f"{batch_size}; use --batch-size ≤ {limit} or a wider model"
        )


def check_relu_follows(model: nn.Module, layer_name: str, data_shape: tuple[int, ...]) -> bool:
    """Whether the first module run after Linear `layer_name` is an nn.ReLU fed its output.

    One probe forward pass on an eval-mode copy of `model` (`probe.probe_layer`) shows the
    modules in the order they run; the model itself is left untouched.

    Args:
        model: the server's model.
        layer_name: the qualified name of a Linear inside `model`.
        data_shape: one input's (channels, height, width).

    Returns:
        True when the module called right after the layer is an nn.ReLU whose input is
        the layer's output.
    """
    return probe_layer(model, layer_name, data_shape).relu_follows()
