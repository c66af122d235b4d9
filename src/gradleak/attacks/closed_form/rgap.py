"""R-GAP: the input of a conv stack recovered layer by layer from one sample's gradients.

Zhu & Blaschko (2021) observe that for one sample every layer of a network without pooling
gives linear equations in that layer's input x. A conv layer z = W * x + b yields

* forward equations: the layer's pre-activation z, known once the next layer's input has
  been recovered (through the inverse of an invertible activation), is linear in x;
* gradient equations: ∂L/∂W = Σ_positions δ ⊗ patch(x), with δ = ∂L/∂z known from the
  deeper layers, is linear in x as well.

Stacking both and solving by least squares gives x, which is the next layer's output, and
so on down to the image. The recursion starts at the final Linear layer, whose input
follows in closed form from ∂L/∂W = (∂L/∂b) xᵀ (see `analytic`), and whose bias gradient
∂L/∂b = p − y gives ∂L/∂x = Wᵀ ∂L/∂b without knowing the label.

Each layer's report gives the number of unknowns, of forward and gradient equations and the
numerical rank of the stacked system: with rank below the unknowns the layer is
under-determined and the least-squares answer is the minimum-norm one, not the input.
Only batch 1 is attacked: with B samples the gradient equations mix B inputs.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import NoReturn

import torch
from torch import nn
from torch.nn import functional as F

from gradleak.attacks.closed_form.analytic import analytic_layer_input
from gradleak.attacks.closed_form.base import ClosedFormAttack, check_no_iterations
from gradleak.attacks.engine.hooks import Observer
from gradleak.attacks.labels import AUTO, resolve_label_strategy
from gradleak.attacks.reconstruction import Reconstruction
from gradleak.core.errors import GradleakError
from gradleak.core.knowledge import Knowledge
from gradleak.core.update import SharedUpdate, UpdateKind

# Singular values below this fraction of the largest count as zero in the rank. The system
# is built in float64 from float32 gradients, so a real rank gap is far below this and
# rounding noise (about 1e-7 relative) far above it.
DEFAULT_RCOND = 1e-10
# Leaves that carry no computation of their own and may sit anywhere in the stack.
_PASSIVE = (nn.Flatten, nn.Identity)
_ACTIVATIONS = (nn.LeakyReLU, nn.Sigmoid)


@dataclass(frozen=True)
class LayerRank:
    """The linear system solved for one conv layer's input, and how well it pinned it down."""

    layer: str
    unknowns: int
    forward_equations: int
    gradient_equations: int
    rank: int
    residual: float  # relative residual of the least-squares solution

    @property
    def equations(self) -> int:
        return self.forward_equations + self.gradient_equations

    @property
    def determined(self) -> bool:
        return self.rank >= self.unknowns

    def summary(self) -> str:
        state = "full rank" if self.determined else "UNDER-DETERMINED"
        counts = f"{self.unknowns} unknowns, {self.equations} eqs, rank {self.rank}"
        return f"{self.layer}: {counts} ({state})"


@dataclass(frozen=True)
class _ConvStep:
    name: str
    conv: nn.Conv2d
    activation: nn.Module | None


@dataclass(frozen=True)
class RGAPResult:
    """The recovered input (1×C×H×W) and the rank report, deepest layer first."""

    image: torch.Tensor
    layers: tuple[LayerRank, ...]

    @property
    def determined(self) -> bool:
        return all(layer.determined for layer in self.layers)


def parse_stack(
    model: nn.Module, data_shape: tuple[int, ...]
) -> tuple[list[_ConvStep], str, nn.Linear]:
    """The model as Conv2d[+activation] layers then one final Linear, or a GradleakError."""
    steps: list[_ConvStep] = []
    linear: tuple[str, nn.Linear] | None = None
    for name, module in model.named_modules():
        if len(list(module.children())) > 0 or isinstance(module, _PASSIVE):
            continue
        if linear is not None:
            _refuse(model, f"{name!r} ({type(module).__name__}) follows the final Linear")
        if isinstance(module, nn.Conv2d):
            _check_conv(model, name, module)
            steps.append(_ConvStep(name, module, None))
        elif isinstance(module, _ACTIVATIONS):
            if not steps or steps[-1].activation is not None:
                _refuse(model, f"activation {name!r} does not directly follow a Conv2d")
            if isinstance(module, nn.LeakyReLU) and module.negative_slope <= 0:
                _refuse(model, f"LeakyReLU {name!r} has slope {module.negative_slope}")
            steps[-1] = _ConvStep(steps[-1].name, steps[-1].conv, module)
        elif isinstance(module, nn.Linear):
            if module.bias is None:
                _refuse(model, f"the final Linear {name!r} has no bias")
            linear = (name, module)
        else:
            _refuse(model, f"{name!r} is a {type(module).__name__}")
    if not steps or linear is None:
        _refuse(model, "it is not one or more Conv2d layers followed by a Linear")
    _check_forward(model, steps, linear[1], data_shape)
    return steps, linear[0], linear[1]


def _refuse(model: nn.Module, why: str) -> NoReturn:
    raise GradleakError(
        f"R-GAP cannot attack {type(model).__name__}: {why}; it needs Conv2d layers (no "
        "pooling), each optionally followed by LeakyReLU or Sigmoid, then one biased Linear "
        "(e.g. the cnn6 model)"
    )


def _check_conv(model: nn.Module, name: str, conv: nn.Conv2d) -> None:
    if isinstance(conv.padding, str) or conv.padding_mode != "zeros":
        _refuse(model, f"Conv2d {name!r} pads with {conv.padding!r}/{conv.padding_mode}")
    if conv.groups != 1:
        _refuse(model, f"Conv2d {name!r} is grouped")


def _check_forward(
    model: nn.Module, steps: list[_ConvStep], linear: nn.Linear, data_shape: tuple[int, ...]
) -> None:
    # The module order says nothing about what forward() does (a skip connection, a pool in
    # functional form), so a probe pass must agree with the stack read as a plain chain.
    generator = torch.Generator().manual_seed(0)
    probe = torch.randn(1, *data_shape, generator=generator, device="cpu")
    probe = probe.to(linear.weight.device)
    probe_model = copy.deepcopy(model).eval()
    with torch.no_grad():
        want = probe_model(probe)
        x = probe
        for step in steps:
            x = step.conv(x)
            if step.activation is not None:
                x = step.activation(x)
        if x[0].numel() != linear.in_features:
            _refuse(model, "its last conv output does not feed the Linear directly")
        got = linear(x.flatten(1))
    if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-4, atol=1e-5):
        _refuse(model, "its forward pass is not the plain chain of its modules")


def _inverse_activation(
    activation: nn.Module | None, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pre-activation z with activation(z) = x, and the derivative activation'(z)."""
    if activation is None:
        return x, torch.ones_like(x)
    if isinstance(activation, nn.LeakyReLU):
        slope = activation.negative_slope
        positive = x >= 0
        return torch.where(positive, x, x / slope), torch.where(positive, 1.0, slope).to(x)
    # Sigmoid: clamp, because a recovered output at 0 or 1 has no finite pre-image.
    eps = torch.finfo(x.dtype).eps
    s = x.clamp(eps, 1 - eps)
    return torch.log(s) - torch.log1p(-s), s * (1 - s)


def _patch_indices(conv: nn.Conv2d, in_shape: tuple[int, int, int]) -> torch.Tensor:
    """(C_in·kh·kw) × positions: 1 + the flat input index each patch entry reads, 0 = padding."""
    count = math.prod(in_shape)
    # Float64 holds these integers exactly, and unfold does the padding and striding.
    device = conv.weight.device
    index = torch.arange(1, count + 1, dtype=torch.float64, device=device).reshape(1, *in_shape)
    patches = F.unfold(
        index,
        conv.kernel_size,
        dilation=conv.dilation,
        padding=conv.padding,
        stride=conv.stride,
    )
    return patches[0].round().long()


def _solve_layer(
    step: _ConvStep,
    in_shape: tuple[int, int, int],
    z: torch.Tensor,
    delta: torch.Tensor,
    weight_grad: torch.Tensor,
    rcond: float,
) -> tuple[torch.Tensor, torch.Tensor, LayerRank]:
    """The layer's input x (flat), the forward matrix A (z = A x + b) and the rank report."""
    conv = step.conv
    n = math.prod(in_shape)
    index = _patch_indices(conv, in_shape)  # J × P
    weight = conv.weight.detach().double().flatten(1)  # O × J
    out_channels, taps = weight.shape
    positions = index.shape[1]
    if z.numel() != out_channels * positions:
        raise GradleakError(
            f"layer {step.name!r} produced {z.numel()} values but its conv gives "
            f"{out_channels * positions}; the model's forward pass is not a plain chain"
        )
    # Column 0 collects the padding, which is known to be zero, and is dropped below.
    # Forward: z[o, p] - b[o] = Σ_j W[o, j] x[index[j, p]].
    device = weight.device
    rows = torch.arange(out_channels * positions, device=device)
    rows = rows.reshape(out_channels, 1, positions)
    forward = torch.zeros(out_channels * positions, n + 1, dtype=torch.float64, device=device)
    forward.index_put_(
        (rows.expand(-1, taps, -1), index.unsqueeze(0).expand(out_channels, -1, -1)),
        weight.unsqueeze(2).expand(-1, -1, positions),
        accumulate=True,
    )
    bias = (
        conv.bias.detach().double()
        if conv.bias is not None
        else torch.zeros(out_channels, dtype=torch.float64, device=device)
    )
    forward_rhs = (z.reshape(out_channels, positions) - bias.double().unsqueeze(1)).flatten()
    # Gradient: ∂L/∂W[o, j] = Σ_p δ[o, p] x[index[j, p]].
    d = delta.reshape(out_channels, positions)
    grad_rows = torch.arange(out_channels * taps, device=device).reshape(out_channels, taps, 1)
    gradient = torch.zeros(out_channels * taps, n + 1, dtype=torch.float64, device=device)
    gradient.index_put_(
        (grad_rows.expand(-1, -1, positions), index.unsqueeze(0).expand(out_channels, -1, -1)),
        d.unsqueeze(1).expand(-1, taps, -1),
        accumulate=True,
    )
    forward, gradient = forward[:, 1:], gradient[:, 1:]
    system = torch.cat([forward, gradient])
    rhs = torch.cat([forward_rhs, weight_grad.double().flatten()])
    # The two blocks differ in scale by orders of magnitude (weights vs. tiny gradients);
    # unit-norm rows keep both in the fit and improve the conditioning.
    norms = torch.linalg.vector_norm(system, dim=1)
    keep = norms > 0
    system, rhs = system[keep] / norms[keep, None], rhs[keep] / norms[keep]
    # LAPACK's gelsd (rank-revealing, rcond) exists on the CPU only: the solve runs there.
    system, rhs = system.cpu(), rhs.cpu()
    solution = torch.linalg.lstsq(system, rhs.unsqueeze(1), rcond=rcond, driver="gelsd")
    x = solution.solution[:, 0].to(device)
    rhs_norm = torch.linalg.vector_norm(rhs).item()
    fit = torch.linalg.vector_norm(system @ solution.solution[:, 0] - rhs).item()
    residual = fit / rhs_norm if rhs_norm else 0.0
    report = LayerRank(
        layer=step.name,
        unknowns=n,
        forward_equations=out_channels * positions,
        gradient_equations=out_channels * taps,
        rank=int(solution.rank),
        residual=residual,
    )
    return x, forward, report


def rgap_recover(
    update: SharedUpdate,
    model: nn.Module,
    data_shape: tuple[int, int, int],
    *,
    rcond: float = DEFAULT_RCOND,
) -> RGAPResult:
    """Recover one sample's input from its gradient update by R-GAP's backward recursion.

    The final Linear's input comes from `analytic_layer_input`; then, deepest conv layer
    first, each layer's input is the least-squares solution (float64, `gelsd`) of its
    forward and gradient equations. The update must come from one sample: with more the
    gradient equations mix the samples' inputs and the answer is no input (nothing here
    can tell).

    Args:
        update: a batch-1 gradient of `model`, one tensor per named parameter.
        model: Conv2d layers (no pooling), each optionally followed by LeakyReLU (slope
            > 0) or Sigmoid, then one biased Linear; left unchanged.
        data_shape: one input's (channels, height, width).
        rcond: singular values below this fraction of the largest count as zero in the
            least-squares solves and their ranks, in [0, 1) (default 1e-10).

    Returns:
        The recovered input 1×C×H×W (normalised space, the gradient's dtype) and one rank
        report per conv layer, deepest first.

    Raises:
        GradleakError: when the update is not a gradient.
        GradleakError: when `model` is not such a stack, or its forward pass is not the
            plain chain of its modules.
        GradleakError: when the final Linear's bias gradients are all zero.
    """
    if update.kind is not UpdateKind.GRADIENT:
        raise GradleakError(
            f"R-GAP reads a gradient but the update is a {update.kind.value}; "
            "attack a FedSGD update (--protocol fedsgd)"
        )
    steps, linear_name, linear = parse_stack(model, data_shape)
    shapes = _input_shapes(steps, data_shape)
    features = analytic_layer_input(update, linear_name).features[0].double()
    bias_grad = update.tensors[f"{linear_name}.bias" if linear_name else "bias"].double()
    x = features
    # ∂L/∂(features) = Wᵀ ∂L/∂logits, and ∂L/∂logits is the bias gradient.
    dx = linear.weight.detach().double().t() @ bias_grad
    reports: list[LayerRank] = []
    for step, in_shape in zip(reversed(steps), reversed(shapes), strict=True):
        z, slope = _inverse_activation(step.activation, x)
        delta = dx * slope
        weight_grad = update.tensors[f"{step.name}.weight"]
        x, forward, report = _solve_layer(step, in_shape, z, delta, weight_grad, rcond)
        dx = forward.t() @ delta
        reports.append(report)
    image = x.reshape(1, *data_shape).to(update.tensors[f"{linear_name}.weight"].dtype)
    return RGAPResult(image=image, layers=tuple(reports))


def _input_shapes(
    steps: list[_ConvStep], data_shape: tuple[int, int, int]
) -> list[tuple[int, int, int]]:
    shapes: list[tuple[int, int, int]] = []
    x = torch.zeros(1, *data_shape, device=steps[0].conv.weight.device)
    with torch.no_grad():
        for step in steps:
            channels, height, width = x.shape[1:]
            shapes.append((channels, height, width))
            x = step.conv(x)
    return shapes


@dataclass(frozen=True)
class RGAPConfig:
    """Options of R-GAP; iterations and restarts are fixed (a closed form, no optimisation)."""

    rcond: float = DEFAULT_RCOND
    iterations: int = 0
    restarts: int = 1

    def validate(self) -> RGAPConfig:
        if not (0 <= self.rcond < 1):
            raise GradleakError(f"rcond must lie in [0, 1), got {self.rcond}")
        check_no_iterations(self.iterations, self.restarts, "R-GAP")
        return self


class RGAPAttack(ClosedFormAttack):
    """Recovers one image from a conv stack's gradients by solving a linear system per layer."""

    default_name = "rgap"
    config_type = RGAPConfig

    def check_model(self, model: nn.Module, data_shape: tuple[int, ...], batch_size: int) -> None:
        """Refuse a model that is not a stack R-GAP can solve, or a batch of several.

        Raises:
            GradleakError: naming what R-GAP cannot attack and what to use instead.
        """
        parse_stack(model, data_shape)
        self._check_batch(batch_size)

    def _check_batch(self, batch_size: int) -> None:
        if batch_size != 1:
            raise GradleakError(
                f"attack '{self.name}' recovers one sample but the batch has {batch_size}; "
                "use batch_size 1 (--batch-size 1)"
            )

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
        """Recover the image of `update`; seed, observer and progress have nothing to drive.

        `rgap_recover` on the update; the label comes from the `auto` label strategy
        (the granted label, else iDLG's).

        Args:
            update: the shared gradient of one sample, one tensor per named parameter.
            model: the server's model, a conv stack `rgap_recover` accepts (left
                unchanged).
            knowledge: gives the input shape, the batch size (must be 1) and whether the
                label is granted.
            seed: unused (nothing is random).
            observer: unused (nothing iterates).
            progress: unused.

        Returns:
            The image 1×C×H×W in the attacked (normalised) space, its label, `loss` and
            `trial_losses` the worst layer's relative least-squares residual, 0
            iterations, and details (whether every layer was determined, each layer's
            unknowns, equations and rank, rcond).

        Raises:
            GradleakError: when the update is not a gradient.
            GradleakError: when the batch is not one sample.
            GradleakError: when the update's names or shapes do not fit `model`, or it
                holds NaN or Inf.
            GradleakError: when `model` is not a stack R-GAP can attack, or the final
                Linear's bias gradients are all zero (`rgap_recover`).
        """
        start = time.perf_counter()
        if update.kind is not UpdateKind.GRADIENT:
            raise GradleakError(
                f"attack '{self.name}' reads a gradient but the update is a "
                f"{update.kind.value}; attack a FedSGD update (--protocol fedsgd)"
            )
        self._check_batch(knowledge.batch_size)
        update.validate_for(model)
        result = rgap_recover(update, model, knowledge.data_shape, rcond=self.config.rcond)
        strategy = resolve_label_strategy(AUTO, knowledge)
        labels = strategy.recover(update, model, knowledge)
        worst = max(layer.residual for layer in result.layers)
        details: dict[str, object] = {
            "determined": result.determined,
            "layers": [layer.summary() for layer in result.layers],
            "ranks": [(layer.unknowns, layer.equations, layer.rank) for layer in result.layers],
            "rcond": self.config.rcond,
        }
        return Reconstruction(
            images=result.image,
            labels=None if labels is None else labels.long(),
            loss=worst,
            iterations=0,
            seconds=time.perf_counter() - start,
            trial_losses=[worst],
            label_strategy=strategy.name if labels is not None else "none",
            labels_recovered=strategy.recovers,
            details=details,
        )


def build() -> RGAPAttack:
    """R-GAP with its defaults."""
    return RGAPAttack()
