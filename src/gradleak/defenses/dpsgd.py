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

With FedAvg the client clips and noises every local step, as DP-SGD training does: the
shared weight delta is recomputed by re-running the client's local training
(`ClientView.local`: the same mini-batches, in the same order, and the same rate as
`fl.local_training.local_sgd`) from the model its round started at (`ClientView.start`),
each step descending the DP-SGD gradient of its mini-batch (clipped sum plus noise, divided
by the mini-batch's size), and sharing θ' − θ_start. With σ = 0 and C above every
per-sample norm this is the plain FedAvg delta. FedADMM increments are refused.

The incoming update's values are ignored and replaced, so DP-SGD must come first in a
chain of defenses (`dpsgd:1:0.5 prune:0.3`); a chain that gives it later, where it would
throw away what ran before it, is refused (`ChainRole.replaces_update`). Only the incoming
update's names are checked against the client's model.

Models with BatchNorm are refused. Opacus cannot compute per-sample gradients through
BatchNorm (a sample's output depends on the whole batch) and would have it replaced by
GroupNorm (`opacus.validators.ModuleValidator.fix`); but the attacker holds the server's
model, with BatchNorm, so an update computed with GroupNorm would not be the gradient of
the model under attack. Use a model without BatchNorm (lenet, mlp) instead.

Each DP-SGD step is the sampled Gaussian mechanism of noise multiplier σ on the step's
batch (`mechanism`); `accounting.privacy_spent` turns a run of such steps into (ε, δ). A
FedSGD update is one step; a FedAvg update is one step per local step, so R rounds of S
local steps are R·S steps for the accountant (`len(local.step_slices(n)) * rounds`). Its
subsampling amplification assumes Poisson-sampled batches, which FedAvg's fixed walk of
the client's samples is not: there the honest sample rate is 1 (or the fraction of the
population the client's data is drawn from, if it is so sampled).
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
from gradleak.fl.local_training import local_sgd

NAME = "dpsgd"
USAGE = (
    "dpsgd:CLIP:SIGMA with CLIP > 0 the per-sample clipping norm and SIGMA >= 0 the noise "
    "multiplier (e.g. dpsgd:1.0:0.5)"
)
CLIP_RANGE = "a finite number > 0"
HELP = (
    "DP-SGD: recompute the update (FedSGD gradient or FedAvg local training) with per-sample "
    "clipping and Gaussian noise on every step (Opacus)"
)


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
    """Replace the update by the DP-SGD one of the client's batch: clip C, noise σC.

    Spelled `dpsgd:CLIP:SIGMA`. A FedSGD gradient becomes (Σ_i clip_C(g_i) + N(0, σ²C²)) / B
    over the B samples of the client's batch; a FedAvg weight delta becomes that of local
    training with such a step per mini-batch; see the top of this module. It replaces the
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
        """Recompute the client's update with per-sample clipping and noise on every step.

        A FedSGD gradient becomes the DP-SGD gradient of the client's batch. A FedAvg weight
        delta is recomputed by re-running the client's local training (`client.local`) from
        the model its round started at (`client.start`), each local step descending the
        DP-SGD gradient of that step's mini-batch (divided by the mini-batch's size), and
        becomes θ' − θ_start. The incoming values are discarded; only the tensor names are
        used, and they must be the client model's parameters. The noise is drawn from
        `generator` on its device, step by step and tensor by tensor in the update's order,
        so a seed repeats it.

        Args:
            update: a gradient (FedSGD) or weight_delta (FedAvg) update of the client's
                model; left unchanged.
            generator: the source of the Gaussian noise.
            client: the client's model (in its batch-norm mode, without BatchNorm layers)
                and its batch, possibly empty; required. A gradient's noised sum is divided
                by its `mean_over`. A weight delta also needs its `local` and `start`.

        Returns:
            A new update of `update`'s kind, tensor order, metadata and buffers: the
            clipped, noised mean gradient over the batch, or the weight delta of local
            training with such steps.

        Raises:
            GradleakError: when `client` is None.
            GradleakError: when `update` is an admm_increment (FedADMM).
            GradleakError: when `update` is a weight_delta and `client` lacks the local
                training or the start model, or gives an expected batch size.
            GradleakError: when the update's tensor names are not the model's parameters.
            GradleakError: when the opacus package is missing.
            GradleakError: when Opacus cannot take the model's per-sample gradients (BatchNorm).
            GradleakError: when a parameter of the model is frozen.
            GradleakError: when the noise σ·C would overflow or did overflow a tensor's
                dtype (σ·C above the dtype's largest value / 1000), naming the bound.
        """
        view = require_client(client, self.spec)
        if update.kind is UpdateKind.ADMM_INCREMENT:
            raise GradleakError(
                f"defense {self.spec!r} cannot replace an admm_increment update: DP-SGD is "
                "not implemented for FedADMM; use it with the FedSGD or FedAvg protocol"
            )
        if update.kind is UpdateKind.WEIGHT_DELTA and (view.local is None or view.start is None):
            raise GradleakError(
                f"defense {self.spec!r} cannot replace a weight_delta update without the "
                "client's local training and the model its round started from; give "
                "ClientView(..., local=..., start=...)"
            )
        names = [name for name, _ in view.model.named_parameters()]
        if sorted(names) != sorted(update.tensors):
            raise GradleakError(
                f"defense {self.spec!r}: the update's tensors are not the client model's "
                "parameters; apply it to the update of the client whose model is given"
            )
        if update.kind is UpdateKind.GRADIENT and view.mean_over == 0:
            raise GradleakError(
                f"defense {self.spec!r} cannot average over an empty batch; give the client's "
                "expected batch size (ClientView(..., expected_batch_size=q·N)) when batches "
                "are Poisson-sampled"
            )
        std = self.noise_multiplier * self.clip
        for name, parameter in view.model.named_parameters():
            if std > largest_noise_std(parameter.dtype):
                raise self._overflow(name, parameter)
        if update.kind is UpdateKind.WEIGHT_DELTA:
            return self._local_training(update, generator, view)
        private = self._private_gradient(
            view.model,
            view.batch.images,
            view.batch.labels,
            list(update.tensors),
            view.mean_over,
            generator,
        )
        return with_tensors(update, private)

    def _private_gradient(
        self,
        model: nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor,
        order: list[str],
        mean_over: int,
        generator: torch.Generator,
    ) -> dict[str, torch.Tensor]:
        """(Σ_i clip_C(g_i) + N(0, σ²C²)) / `mean_over` on (images, labels) at `model`.

        The noise is drawn tensor by tensor in `order`; an empty batch gives the noise
        alone. Fails when the noise turned a finite entry of the clipped sum non-finite.
        """
        if len(images):
            per_sample = per_sample_gradients(model, images, labels)
            clipped_sum = _clipped_sum(per_sample, self.clip)
        else:  # a Poisson batch may be empty: the step shares the noise alone
            params = model.named_parameters()
            clipped_sum = {n: torch.zeros_like(p.detach()) for n, p in params}
        std = self.noise_multiplier * self.clip
        private = {}
        for name in order:  # the update's order fixes the order of the draws
            total = clipped_sum[name]
            noise = torch.randn(
                total.shape, dtype=total.dtype, device=generator.device, generator=generator
            )
            private[name] = (total + std * noise.to(total.device)) / mean_over
        # A non-finite clipped sum is the client's own gradient; only the noise is ours.
        check_no_overflow(clipped_sum, SharedUpdate(private), self._overflow)
        return private

    def _local_training(
        self, update: SharedUpdate, generator: torch.Generator, view: ClientView
    ) -> SharedUpdate:
        """FedAvg with DP-SGD steps: θ' − θ_start, θ' from `view.start` by `view.local`."""
        assert view.local is not None and view.start is not None  # checked by `apply`
        if view.expected_batch_size is not None:
            raise GradleakError(
                f"defense {self.spec!r} divides each local step by its mini-batch's size; "
                "an expected batch size applies to FedSGD gradients only"
            )
        order = list(update.tensors)

        def step_gradient(
            model: nn.Module, images: torch.Tensor, labels: torch.Tensor
        ) -> dict[str, torch.Tensor]:
            return self._private_gradient(model, images, labels, order, len(images), generator)

        # The client's own copy of the start, in the client's batch-norm mode.
        model = copy.deepcopy(view.start)
        model.train(view.model.training)
        start = {n: p.detach().clone() for n, p in model.named_parameters()}
        local_sgd(model, view.batch, view.local, gradient=step_gradient)
        delta = {n: p.detach() - start[n] for n, p in model.named_parameters()}
        return with_tensors(update, {name: delta[name] for name in order})

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
    try:
        wrapped = opacus.GradSampleModule(clone, batch_first=True, loss_reduction="sum")
    except NotImplementedError as exc:  # a layer Opacus has no per-sample rule for
        first = " ".join(str(exc).split())
        raise GradleakError(
            f"DP-SGD cannot take per-sample gradients of {type(model).__name__}: {first}; "
            "use a model built from standard layers"
        ) from exc
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
