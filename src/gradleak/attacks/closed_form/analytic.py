"""Analytic recovery of a fully connected layer's input from its weight and bias gradients.

Inverting Gradients (Geiping et al. 2020) observes that a biased linear layer y = W x + b
leaks its input in closed form. With one sample, ∂L/∂W_i = (∂L/∂b_i) x for every output
row i, so x = ∂L/∂W_i / ∂L/∂b_i from any row whose bias gradient is not zero. This module
combines all usable rows by least squares, x = Σ_i g_bi ∂L/∂W_i / Σ_i g_bi², which is exact
when the rows agree, and reports how far they disagree (the relative residual of the
rank-one fit ∂L/∂W ≈ g_b xᵀ: about 1e-7 for one sample in float32).

When the layer is the model's first operation on the flattened image (an MLP) the input is
the image itself; inside a CNN it is the feature vector entering that layer, which
`analytic_layer_input` returns but which is no image.

With a batch of B samples the shared gradient is a mean over samples: ∂L/∂W_i is
Σ_n g_bi⁽ⁿ⁾ x_n up to the 1/B factor, so a row's ratio ∂L/∂W_i / ∂L/∂b_i is the average
of the batch's inputs weighted by that row's per-sample bias gradients, a different mixture
for every row. For B > 1 the attack returns the ratios of the B rows with the largest
|bias gradient|: B mixtures of the samples, not the samples, so their PSNR against the
matched ground truth is low. Separating the mixtures needs more than this closed form.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import nn

from gradleak.attacks.closed_form.base import (
    ClosedFormAttack,
    check_no_iterations,
    closed_form_result,
)
from gradleak.attacks.closed_form.probe import name_of, probe_layer
from gradleak.attacks.engine.hooks import Observer
from gradleak.attacks.reconstruction import Reconstruction
from gradleak.core.errors import GradleakError
from gradleak.core.knowledge import Knowledge
from gradleak.core.update import SharedUpdate, UpdateKind

# Rows whose |bias gradient| is below this fraction of the largest one are left out: they
# carry the input scaled almost to nothing, so rounding dominates their ratio.
DEFAULT_THRESHOLD = 1e-4


@dataclass(frozen=True)
class AnalyticResult:
    """Inputs recovered at one Linear layer, the rows behind them and their agreement."""

    layer: str
    features: torch.Tensor  # count × in_features; row k comes from rows[k] (or all usable)
    usable_rows: tuple[int, ...]  # output rows whose bias gradient passed the threshold
    rows: tuple[int, ...]  # per returned vector, the row it is the ratio of; () = least squares
    spread: float  # relative residual of the rank-one fit over the usable rows

    @property
    def num_usable(self) -> int:
        return len(self.usable_rows)


def find_first_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    """Name and module of the model's first nn.Linear, which must have a bias.

    "First" is in `named_modules` order (the order the modules were registered), which
    need not be the order `forward` runs them in; `takes_flat_image` checks the latter.

    Args:
        model: the server's model.

    Returns:
        (name, layer): the qualified name of the first nn.Linear ("" when `model` itself
        is one) and the layer.

    Raises:
        GradleakError: when `model` holds no nn.Linear.
        GradleakError: when its first nn.Linear has no bias.
    """
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            if module.bias is None:
                raise GradleakError(
                    f"the first Linear layer {name!r} of {type(model).__name__} has no bias; "
                    "the analytic attack divides by the bias gradient, so use a model whose "
                    "first Linear has bias=True"
                )
            return name, module
    raise GradleakError(
        f"{type(model).__name__} has no nn.Linear layer; the analytic attack needs a model "
        "with a fully connected layer (e.g. mlp)"
    )


def analytic_layer_input(
    update: SharedUpdate,
    layer_name: str,
    *,
    count: int = 1,
    threshold: float = DEFAULT_THRESHOLD,
) -> AnalyticResult:
    """Recover the input of Linear `layer_name` from a gradient update.

    count=1 gives the least-squares input over all usable rows (exact for one sample);
    count=B gives the ratios of the B rows with the largest |bias gradient|, each a
    weighted mixture of the batch's inputs when B > 1.

    Computed in float64 and returned in the gradient's dtype.

    Args:
        update: a gradient holding `layer_name`'s weight (out × in) and bias (out).
        layer_name: the qualified name of a biased nn.Linear ("" for a bare Linear).
        count: how many input vectors to return, a positive integer (default 1).
        threshold: rows whose |bias gradient| is at most this fraction of the largest
            are not used, in [0, 1) (default 1e-4).

    Returns:
        The layer's name, the recovered inputs `features` (count × in_features), the
        usable rows, the rows behind each returned vector (() for the least-squares
        one), and `spread`, the relative residual of the rank-one fit ∂L/∂W ≈ g_b xᵀ over
        the usable rows (near 0 for one sample; larger for a batch).

    Raises:
        GradleakError: when the update is not a gradient.
        GradleakError: when `count` is not a positive integer.
        GradleakError: when the update has no 2-D weight or no matching bias for the layer.
        GradleakError: when every bias gradient of the layer is zero.
        GradleakError: when fewer rows are usable than `count`.
    """
    if update.kind is not UpdateKind.GRADIENT:
        raise GradleakError(
            f"the analytic attack reads a gradient but the update is a {update.kind.value}; "
            "attack a FedSGD update (--protocol fedsgd)"
        )
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise GradleakError(f"count must be a positive integer, got {count!r}")
    weight, bias = layer_gradients(update, layer_name)
    # Float64: the ratios divide by small bias gradients and the residual subtracts
    # nearly equal numbers.
    gw, gb = weight.double(), bias.double()
    scale = gb.abs().max().item()
    usable = (gb.abs() > threshold * scale).nonzero().flatten() if scale > 0 else gb[:0].long()
    if usable.numel() == 0:
        raise GradleakError(
            f"every bias gradient of layer {layer_name!r} is zero, so no row reveals its input; "
            "the analytic attack needs a sample whose loss reaches that layer"
        )
    if usable.numel() < count:
        raise GradleakError(
            f"layer {layer_name!r} has {usable.numel()} usable rows but {count} vectors were "
            "asked for; use a smaller batch or a wider layer"
        )
    w_rows, b_rows = gw[usable], gb[usable]
    combined = (b_rows @ w_rows) / (b_rows @ b_rows)
    residual = w_rows - torch.outer(b_rows, combined)
    norm = torch.linalg.vector_norm(w_rows).item()
    spread = torch.linalg.vector_norm(residual).item() / norm if norm > 0 else 0.0
    if count == 1:
        features, rows = combined.unsqueeze(0), ()
    else:
        order = b_rows.abs().argsort(descending=True)[:count]
        chosen = usable[order]
        features = gw[chosen] / gb[chosen].unsqueeze(1)
        rows = tuple(int(r) for r in chosen)
    return AnalyticResult(
        layer=layer_name,
        features=features.to(weight.dtype),
        usable_rows=tuple(int(r) for r in usable),
        rows=rows,
        spread=spread,
    )


def layer_gradients(update: SharedUpdate, layer_name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The weight (out × in) and bias (out) gradients of Linear `layer_name` in `update`.

    Args:
        update: the shared update.
        layer_name: the qualified name of a biased nn.Linear ("" for a bare Linear).

    Returns:
        (weight, bias) as stored in the update.

    Raises:
        GradleakError: when the update has no 2-D weight or no matching bias for the layer.
    """
    prefix = f"{layer_name}." if layer_name else ""
    weight = update.tensors.get(f"{prefix}weight")
    bias = update.tensors.get(f"{prefix}bias")
    if weight is None or weight.dim() != 2:
        raise GradleakError(
            f"the update has no 2-D weight gradient for layer {layer_name!r}; name a Linear "
            "layer of the model that produced the update"
        )
    if bias is None or bias.shape != (weight.shape[0],):
        raise GradleakError(
            f"the update has no bias gradient for Linear layer {layer_name!r}; the analytic "
            "attack needs a layer with bias=True"
        )
    return weight, bias


def takes_flat_image(model: nn.Module, layer: nn.Linear, data_shape: tuple[int, ...]) -> bool:
    """Whether `layer` receives the flattened image unchanged (its input is the image).

    The layer must take prod(data_shape) inputs, and a probe forward pass on an eval-mode
    copy of `model` with one seeded standard-normal input must hand the layer exactly the
    flattened input. The model itself is left untouched.

    Args:
        model: the server's model (float32 inputs must run through it).
        layer: an nn.Linear inside `model` (e.g. from `find_first_linear`).
        data_shape: one input's (channels, height, width).

    Returns:
        True when the layer's input is the flattened image, so the analytic attack
        recovers images; False otherwise (its input is a feature vector).

    Raises:
        GradleakError: `layer` is not a module of `model`, or `model` cannot run one input
            of `data_shape`.
    """
    if layer.in_features != math.prod(data_shape):
        return False
    return probe_layer(model, name_of(model, layer), data_shape).reads_flat_image()


@dataclass(frozen=True)
class AnalyticConfig:
    """Options of the analytic attack; iterations and restarts are fixed (no optimisation)."""

    threshold: float = DEFAULT_THRESHOLD
    iterations: int = 0
    restarts: int = 1

    def validate(self) -> AnalyticConfig:
        if not (0 <= self.threshold < 1):
            raise GradleakError(f"threshold must lie in [0, 1), got {self.threshold}")
        check_no_iterations(self.iterations, self.restarts, "the analytic attack")
        return self


class AnalyticAttack(ClosedFormAttack):
    """Reads an MLP's input image straight out of its first layer's gradients."""

    default_name = "analytic"
    config_type = AnalyticConfig

    def check_model(self, model: nn.Module, data_shape: tuple[int, ...], batch_size: int) -> None:
        """Refuse a model whose first Linear layer does not read the flattened image.

        Raises:
            GradleakError: naming the layer and what to use instead.
        """
        self._image_layer(model, data_shape)

    def _image_layer(self, model: nn.Module, data_shape: tuple[int, ...]) -> str:
        """The name of the first Linear layer, which must read the flattened image."""
        name, layer = find_first_linear(model)
        if not takes_flat_image(model, layer, data_shape):
            raise GradleakError(
                f"attack '{self.name}' recovers the input features of layer {name!r}, not the "
                "image, because that layer does not read the flattened image; use an mlp "
                "model for images, or analytic_layer_input for the features"
            )
        return name

    def reconstruct(
        self,
        update: SharedUpdate,
        model: nn.Module,
        knowledge: Knowledge,
        *,
        seed: int = 0,
        observer: Observer | None = None,
        progress: bool = True,
    ) -> Reconstruction:
        """Recover the images of `update`; seed, observer and progress have nothing to drive.

        The images are read from the model's first Linear layer, which must receive the
        flattened image (an MLP): for batch 1 the least-squares input over all usable
        rows (exact), for B > 1 the ratios of the B rows with the largest |bias gradient|
        (mixtures of the batch's images, not the images). Labels come from the `auto`
        label strategy: the granted labels, else iDLG's for batch 1, else none.

        Args:
            update: the shared gradient, one tensor per named parameter of `model`.
            model: the server's model (left unchanged).
            knowledge: gives the input shape, the batch size B and whether the labels
                are granted.
            seed: unused (nothing is random).
            observer: unused (nothing iterates).
            progress: unused.

        Returns:
            The images B×C×H×W in the attacked (normalised) space, the labels (None
            without granted labels for B > 1), `loss` and `trial_losses` the spread of the
            rank-one fit, 0 iterations, and details (layer, usable rows, spread,
            threshold, and for B > 1 the rows used).

        Raises:
            GradleakError: when the update's names or shapes do not fit `model`, or it
                holds NaN or Inf.
            GradleakError: when `model` has no nn.Linear, or its first one has no bias.
            GradleakError: when that layer does not read the flattened image.
            GradleakError: when the update is not a gradient, its bias gradients are all
                zero, or fewer than B rows are usable (`analytic_layer_input`).
        """
        start = time.perf_counter()
        update.validate_for(model)
        name = self._image_layer(model, knowledge.data_shape)
        b = knowledge.batch_size
        result = analytic_layer_input(update, name, count=b, threshold=self.config.threshold)
        images = result.features.reshape(b, *knowledge.data_shape)
        details: dict[str, object] = {
            "layer": name,
            "usable_rows": result.num_usable,
            "spread": result.spread,
            "threshold": self.config.threshold,
            "combined": "least squares over usable rows" if b == 1 else "one row per image",
        }
        if result.rows:
            details["rows"] = list(result.rows)
        return closed_form_result(
            images, update, model, knowledge, loss=result.spread, start=start, details=details
        )


def build() -> AnalyticAttack:
    """The analytic fully-connected attack with its defaults."""
    return AnalyticAttack()
