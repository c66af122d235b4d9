"""One probe forward pass: what a layer of the server's model receives, and what runs next.

The closed forms read a Linear layer's input from its gradients, so they must know whether
that input is the flattened image (analytic, SPEAR) and whether a ReLU follows the layer
(SPEAR). Both are settled by running the model once on a seeded input, whatever order its
modules were registered in; `probe_layer` does that once and answers both.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from gradleak.core.errors import GradleakError


@dataclass(frozen=True)
class LayerProbe:
    """What one forward pass of a seeded input showed of a layer.

    Attributes:
        probe: the input, 1 × `data_shape`, on the layer's device.
        layer_input: what the layer received on its first call (None: it never ran).
        next_module: the leaf module run right after the layer (None: none ran).
        next_reads_output: that module was fed the layer's output itself.
    """

    probe: torch.Tensor
    layer_input: torch.Tensor | None
    next_module: nn.Module | None
    next_reads_output: bool

    def reads_flat_image(self) -> bool:
        """Whether the layer received exactly the flattened input."""
        seen = self.layer_input
        flat = self.probe.flatten(1)
        return seen is not None and seen.shape == flat.shape and bool(torch.equal(seen, flat))

    def relu_follows(self) -> bool:
        """Whether an nn.ReLU ran right after the layer, on the layer's output."""
        return isinstance(self.next_module, nn.ReLU) and self.next_reads_output


def probe_layer(model: nn.Module, layer_name: str, data_shape: tuple[int, ...]) -> LayerProbe:
    """Run one seeded standard-normal input through an eval-mode copy of `model`.

    The copy keeps the server's batch-norm statistics untouched; the model itself is left
    as it was.

    Args:
        model: the server's model (float32 inputs must run through it).
        layer_name: the qualified name of a leaf module of `model` ("" for the model itself).
        data_shape: one input's shape, e.g. (channels, height, width).

    Returns:
        The probe, what the layer received and what ran right after it.

    Raises:
        GradleakError: `layer_name` names no module of `model`, or `model` cannot run one
            input of `data_shape`.
    """
    probe_model = copy.deepcopy(model).eval()
    modules = dict(probe_model.named_modules())
    if layer_name not in modules:
        raise GradleakError(f"the model has no layer {layer_name!r}; name one of its modules")
    target = modules[layer_name]
    calls: list[tuple[nn.Module, object]] = []
    output: list[torch.Tensor] = []
    leaves = [m for m in modules.values() if not any(True for _ in m.children())]
    if not any(leaf is target for leaf in leaves):
        leaves.append(target)  # a layer with children of its own is watched all the same
    handles = [
        leaf.register_forward_pre_hook(lambda m, args: calls.append((m, args[0] if args else None)))
        for leaf in leaves
    ]
    handles.append(target.register_forward_hook(lambda _m, _i, out: output.append(out)))
    device = next((p.device for p in target.parameters()), torch.device("cpu"))
    # Drawn on the CPU (also under a default-device context), then moved to the layer's.
    generator = torch.Generator().manual_seed(0)
    probe = torch.randn(1, *data_shape, generator=generator, device="cpu").to(device)
    try:
        with torch.no_grad():
            probe_model(probe)
    except RuntimeError as exc:  # shape mismatches: the model does not read such inputs
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise GradleakError(
            f"the model cannot run one input of shape {tuple(data_shape)} ({first}); "
            "check that the model's input shape matches the data's"
        ) from exc
    finally:
        for handle in handles:
            handle.remove()
    position = next((i for i, (m, _) in enumerate(calls) if m is target), None)
    layer_input = None if position is None else calls[position][1]
    after = None if position is None or position + 1 >= len(calls) else calls[position + 1]
    return LayerProbe(
        probe=probe,
        layer_input=layer_input if isinstance(layer_input, torch.Tensor) else None,
        next_module=None if after is None else after[0],
        next_reads_output=after is not None and bool(output) and after[1] is output[0],
    )


def name_of(model: nn.Module, layer: nn.Module) -> str:
    """The qualified name of `layer` inside `model` ("" for the model itself).

    Raises:
        GradleakError: `layer` is not a module of `model`.
    """
    name = next((name for name, module in model.named_modules() if module is layer), None)
    if name is None:
        raise GradleakError(f"the layer {layer} is not a module of the model given")
    return name
