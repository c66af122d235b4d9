"""What SPEAR needs of a model and batch: a ReLU after the Linear layer, B within its size."""

from __future__ import annotations

import copy

import torch
from torch import nn

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

    A probe forward pass on an eval-mode copy of `model` records the leaf modules in the
    order they run; the model itself is left untouched.

    Args:
        model: the server's model.
        layer_name: the qualified name of a Linear inside `model`.
        data_shape: one input's (channels, height, width).

    Returns:
        True when the module called right after the layer is an nn.ReLU whose input is
        the layer's output.
    """
    probe_model = copy.deepcopy(model).eval()
    modules = dict(probe_model.named_modules())
    target = modules[layer_name]
    calls: list[tuple[nn.Module, object]] = []
    handles = [
        module.register_forward_pre_hook(
            lambda m, args: calls.append((m, args[0] if args else None))
        )
        for module in modules.values()
        if not any(True for _ in module.children())
    ]
    output: list[torch.Tensor] = []
    handles.append(target.register_forward_hook(lambda _m, _i, out: output.append(out)))
    probe = torch.randn(1, *data_shape, generator=torch.Generator().manual_seed(0))
    try:
        with torch.no_grad():
            probe_model(probe.to(target.weight.device))
    finally:
        for handle in handles:
            handle.remove()
    position = next((i for i, (m, _) in enumerate(calls) if m is target), None)
    if position is None or position + 1 >= len(calls) or not output:
        return False
    after, given = calls[position + 1]
    return isinstance(after, nn.ReLU) and given is output[0]
