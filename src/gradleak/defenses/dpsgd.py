"""DP-SGD (Abadi et al., "Deep Learning with Differential Privacy", CCS 2016) on the client.

The client recomputes its FedSGD gradient from its own batch: per-sample gradients of the
cross-entropy (Opacus `GradSampleModule` on a copy of the client's model), each sample's
gradient over all parameters together clipped to L2 norm <= C, the clipped gradients
summed, Gaussian noise N(0, σ²C²) added to every entry (drawn from the defense's
generator), and the sum divided by the batch size B. With σ = 0 and C above every
per-sample norm this is exactly the plain FedSGD update (mean cross-entropy gradient).
Training with Poisson-sampled batches divides by the expected batch size q·N instead
(`ClientView.expected_batch_size`), as Opacus does: the size of such a batch depends on
who is in the data. An empty batch shares the noise alone.

The incoming update's values are ignored and replaced, so DP-SGD must come first in a
chain of defenses (`dpsgd:1:0.5 prune:0.3`); a chain that gives it later, where it would
throw away what ran before it, is refused (`ChainRole.replaces_update`). Only the incoming
update's names are checked against the client's model.

Models with BatchNorm are refused. Opacus cannot compute per-sample gradients through
BatchNorm (a sample's output depends on the whole batch) and would have it replaced by
GroupNorm (`opacus.validators.ModuleValidator.fix`); but the attacker holds the server's
model, with BatchNorm, so an update computed with GroupNorm would not be the gradient of
the model under attack. Use a model without BatchNorm (lenet, mlp) instead.

Each application is the sampled Gaussian mechanism of noise multiplier σ on the client's
batch (`mechanism`); `accounting.privacy_spent` turns a run of such steps into (ε, δ).
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass
from types import ModuleType
from typing import ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from gradleak.core.errors import GradleakError
from gradleak.core.update import SharedUpdate, UpdateKind
from gradleak.defenses.accounting import SIGMA_RANGE, GaussianMechanism
from gradleak.defenses.arguments import check_count, parse_number
from gradleak.defenses.base import (
    ChainRole,
    ClientView,
    check_no_overflow,
    largest_noise_std,
    require_client,
    with_tensors,
)

NAME = "dpsgd"
USAGE = (
    "dpsgd:CLIP:SIGMA with CLIP > 0 the per-sample clipping norm and SIGMA >= 0 the noise "
    "multiplier (e.g. dpsgd:1.0:0.5)"
)
CLIP_RANGE = "a finite number > 0"
HELP = "DP-SGD: recompute the gradient with per-sample clipping and Gaussian noise (Opacus)"


def _opacus(what: str) -> ModuleType:
    """The opacus package, or a one-line error saying how to get it."""
    try:
        import opacus
    except ImportError:
        raise GradleakError(f"{what} needs the opacus package; install it with pip") from None
    return opacus


def _check_clip(clip: float) -> None:
    if not (math.isfinite(clip) and clip > 0):  # also rejects NaN
        raise GradleakError(f"dpsgd clipping norm must be {CLIP_RANGE}, got {clip}")


def _check_sigma(sigma: float) -> None:
    if not (math.isfinite(sigma) and sigma >= 0):
        raise GradleakError(f"dpsgd noise multiplier must be {SIGMA_RANGE}, got {sigma}")


@dataclass(frozen=True)
class DPSGD:
    """Replace the update by the DP-SGD gradient of the client's batch: clip C, noise σC.

    Spelled `dpsgd:CLIP:SIGMA`. The update becomes (Σ_i clip_C(g_i) + N(0, σ²C²)) / B over
    the B samples of the client's batch; see the top of this module. It replaces the
    incoming update, so it comes first in a chain, and it runs the sampled Gaussian
    mechanism of noise multiplier σ.

    Args:
        clip: the per-sample clipping norm C, the largest L2 norm a sample's gradient (over
            all parameters together) keeps; a finite number > 0.
        noise_multiplier: σ, so that each entry of the clipped sum gets Gaussian noise of
            standard deviation σ·C (σ·C / B on the mean); a finite number >= 0.

    Raises:
        GradleakError: when `clip` is not a finite number > 0 (NaN included).
        GradleakError: when `noise_multiplier` is not a finite number >= 0 (NaN included).
    """

    clip: float
    noise_multiplier: float

    role: ClassVar[ChainRole] = ChainRole(replaces_update=True)

    def __post_init__(self) -> None:
        _check_clip(self.clip)
        _check_sigma(self.noise_multiplier)
        object.__setattr__(self, "clip", float(self.clip))
        object.__setattr__(self, "noise_multiplier", float(self.noise_multiplier))

    @property
    def spec(self) -> str:
        """`dpsgd:CLIP:SIGMA`, which `parse_defense` reads back as an equal defense."""
        return f"{NAME}:{self.clip!r}:{self.noise_multiplier!r}"

    @property
    def mechanism(self) -> GaussianMechanism:
        """The sampled Gaussian mechanism of noise multiplier σ, on the client's batch."""
        return GaussianMechanism(self.noise_multiplier)

    def apply(
        self,
        update: SharedUpdate,
        generator: torch.Generator,
        client: ClientView | None = None,
    ) -> SharedUpdate:
        """Recompute the client's FedSGD gradient with per-sample clipping and noise.

        The incoming values are discarded; only the tensor names are used, and they must
        be the client model's parameters. The noise is drawn from `generator` on its
        device, tensor by tensor in the update's order, so a seed repeats it.

        Args:
            update: a gradient update of the client's model; left unchanged.
            generator: the source of the Gaussian noise.
            client: the client's model (in its batch-norm mode, without BatchNorm layers)
                and its batch, possibly empty; required. The noised sum is divided by its
                `mean_over`.

        Returns:
            A new gradient update, each tensor the clipped, noised mean over the batch, with
            `update`'s tensor order, metadata and buffers.

        Raises:
            GradleakError: when `client` is None.
            GradleakError: when `update` is not a gradient (FedAvg or FedADMM updates).
            GradleakError: when the update's tensor names are not the model's parameters.
            GradleakError: when the opacus package is missing.
            GradleakError: when Opacus cannot take the model's per-sample gradients (BatchNorm).
            GradleakError: when a parameter of the model is frozen.
            GradleakError: when the noise σ·C would overflow or did overflow a tensor's
                dtype (σ·C above the dtype's largest value / 1000), naming the bound.
        """
        view = require_client(client, self.spec)
        if update.kind is not UpdateKind.GRADIENT:
            raise GradleakError(
                f"defense {self.spec!r} recomputes a FedSGD gradient and cannot replace a "
                f"{update.kind.value} update; use it with the FedSGD protocol"
            )
        names = [name for name, _ in view.model.named_parameters()]
        if sorted(names) != sorted(update.tensors):
            raise GradleakError(
                f"defense {self.spec!r}: the update's tensors are not the client model's "
                "parameters; apply it to the update of the client whose model is given"
            )
        if view.mean_over == 0:
            raise GradleakError(
                f"defense {self.spec!r} cannot average over an empty batch; give the client's "
                "expected batch size (ClientView(..., expected_batch_size=q·N)) when batches "
                "are Poisson-sampled"
            )
        std = self.noise_multiplier * self.clip
        for name, parameter in view.model.named_parameters():
            if std > largest_noise_std(parameter.dtype):
                raise self._overflow(name, parameter)
        if len(view.batch):
            per_sample = per_sample_gradients(view.model, view.batch.images, view.batch.labels)
            clipped_sum = _clipped_sum(per_sample, self.clip)
        else:  # a Poisson batch may be empty: the step shares the noise alone
            params = view.model.named_parameters()
            clipped_sum = {n: torch.zeros_like(p.detach()) for n, p in params}
        private = {}
        for name in update.tensors:  # the update's order fixes the order of the draws
            total = clipped_sum[name]
            noise = torch.randn(
                total.shape, dtype=total.dtype, device=generator.device, generator=generator
            )
            private[name] = (total + std * noise.to(total.device)) / view.mean_over
        shared = with_tensors(update, private)
        # A non-finite clipped sum is the client's own gradient; only the noise is ours.
        check_no_overflow(clipped_sum, shared, self._overflow)
        return shared

    def _overflow(self, name: str, tensor: torch.Tensor) -> GradleakError:
        """The one line for noise σ·C too large for `tensor`'s dtype, with the bound."""
        dtype = str(tensor.dtype).removeprefix("torch.")
        std = self.noise_multiplier * self.clip
        return GradleakError(
            f"defense {self.spec!r} overflows update tensor {name!r}: noise of standard "
            f"deviation σ·C = {std:.3g} does not fit in {dtype} (largest value "
            f"{torch.finfo(tensor.dtype).max:.3g}); keep σ·C at most "
            f"{largest_noise_std(tensor.dtype):.3g}"
        )


def per_sample_gradients(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Each sample's cross-entropy gradient, B×(parameter shape) per parameter, by Opacus.

    Computed on a copy of `model` (same batch-norm mode), which is left untouched. Fails
    with one line for a model Opacus cannot handle (BatchNorm above all).
    """
    opacus = _opacus("DP-SGD")
    from opacus.validators import ModuleValidator

    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        raise GradleakError(
            f"DP-SGD needs a model without BatchNorm (lenet, mlp); {type(model).__name__} has "
            "BatchNorm, which Opacus cannot take per-sample gradients through, and replacing "
            "it with GroupNorm would no longer give the gradient of the server's model"
        )
    problems = ModuleValidator.validate(model, strict=False)
    if problems:
        first = str(problems[0]).splitlines()[0]
        raise GradleakError(
            f"DP-SGD cannot take per-sample gradients of {type(model).__name__}: {first}"
        )
    clone = copy.deepcopy(model)
    params = dict(clone.named_parameters())
    frozen = [name for name, p in params.items() if not p.requires_grad]
    if frozen:
        raise GradleakError(
            f"DP-SGD needs every parameter trainable, but {frozen[0]!r} is frozen; "
            "unfreeze the model's parameters"
        )
    for p in params.values():
        p.grad = None
    wrapped = opacus.GradSampleModule(clone, batch_first=True, loss_reduction="sum")
    # A sum of per-sample losses: each sample's gradient is its own loss's gradient.
    loss = F.cross_entropy(wrapped(images), labels, reduction="sum")
    with warnings.catch_warnings():
        # Opacus's hooks fire on module outputs when the images need no gradient: expected.
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        loss.backward()
    return {name: p.grad_sample.detach() for name, p in params.items()}


def _clipped_sum(per_sample: dict[str, torch.Tensor], clip: float) -> dict[str, torch.Tensor]:
    """Σ_i g_i / max(1, ‖g_i‖/C), with ‖g_i‖ over all of sample i's parameter gradients."""
    squares = [g.flatten(1).double().pow(2).sum(dim=1) for g in per_sample.values()]
    norms = torch.stack(squares).sum(dim=0).sqrt()
    scale = 1.0 / torch.clamp(norms / clip, min=1.0)
    summed = {}
    for name, g in per_sample.items():
        factor = scale.to(device=g.device, dtype=g.dtype).reshape(-1, *[1] * (g.dim() - 1))
        summed[name] = (g * factor).sum(dim=0)
    return summed


def parse(args: list[str]) -> DPSGD:
    """`dpsgd:CLIP:SIGMA`."""
    check_count(NAME, args, USAGE, 2, 2)
    clip = parse_number(args[0], "dpsgd clipping norm", CLIP_RANGE)
    sigma = parse_number(args[1], "dpsgd noise multiplier", SIGMA_RANGE)
    return DPSGD(clip, sigma)
