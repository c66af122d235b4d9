"""Image priors added to the matching loss, and how a run names them (`--prior`).

A prior is a term on one trial's candidate images that joins the gradient-matching
distance in the loss the optimisers minimise (restart selection still ranks by the
distance alone). Two kinds act on the images directly:

- `tv[:W]`: the modality's total variation (Inverting Gradients), weight W;
- `bn[:W]`, `bn-server[:W]`, `bn-client[:W]`: the batch-norm statistics prior
  (DeepInversion, Yin et al. 2020; GradInversion, Yin et al. 2021): the mean and variance
  of the features entering every batch-norm layer, computed on the candidate batch, are
  pulled toward target statistics, Σ_l ‖μ_l − μ*_l‖₂ + ‖σ²_l − σ²*_l‖₂. The targets are
  the server model's running statistics (`bn-server`: the server owns its model) or the
  client's batch statistics (`bn-client`: read from the batch-norm buffers a client shares
  with its update, `--share-buffers`); `bn` takes the client's where they are shared and the
  server's otherwise.

Two kinds replace what the optimisers move (`gradleak.attacks.priors.latent`):
`gan:PATH` searches a trained generator's latent space (GGL, Li et al. 2022) and
`gias:PATH` then fine-tunes the generator per image (GIAS, Jeon et al. 2021).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from gradleak.core.errors import GradleakError
from gradleak.core.update import SharedUpdate, UpdateKind

BN_DEFAULT_WEIGHT = 1e-2


@dataclass(frozen=True)
class PriorKind:
    """One kind of prior a run can name.

    Attributes:
        name: how `--prior` spells it.
        description: one line for `gradleak list`.
        family: "tv", "batch-norm" or "generative": a run takes one prior of each family.
        takes_path: the spec is `name:PATH` (a trained prior's file) instead of `name[:W]`.
        default_weight: the weight without `:W` (None: the modality's default, TV only).
        statistics: batch-norm priors: whose statistics, "server", "client" or "granted"
            (the client's where the threat model grants them, else the server's).
        fine_tunes: generative priors: the generator is fine-tuned per image (GIAS).
    """

    name: str
    description: str
    family: str
    takes_path: bool = False
    default_weight: float | None = None
    statistics: str = ""
    fine_tunes: bool = False


PRIOR_KINDS: dict[str, PriorKind] = {
    kind.name: kind
    for kind in (
        PriorKind(
            "tv",
            "total variation of the candidate images (Inverting Gradients); default weight "
            "0.05 below 64 pixels a side, 1e-1 from 64 on",
            "tv",
        ),
        PriorKind(
            "bn",
            "batch-norm statistics (DeepInversion/GradInversion): the client's batch "
            "statistics where it shares its buffers, else the server's running statistics",
            "batch-norm",
            default_weight=BN_DEFAULT_WEIGHT,
            statistics="granted",
        ),
        PriorKind(
            "bn-server",
            "batch-norm statistics pulled toward the server model's running statistics",
            "batch-norm",
            default_weight=BN_DEFAULT_WEIGHT,
            statistics="server",
        ),
        PriorKind(
            "bn-client",
            "batch-norm statistics pulled toward the client's batch statistics, read from "
            "the buffers it shares (--share-buffers)",
            "batch-norm",
            default_weight=BN_DEFAULT_WEIGHT,
            statistics="client",
        ),
        PriorKind(
            "gan",
            "a trained generator's latent space searched for the images (GGL); "
            "gradleak train-prior makes one",
            "generative",
            takes_path=True,
        ),
        PriorKind(
            "gias",
            "the generator's latent searched, then its weights fine-tuned per image (GIAS)",
            "generative",
            takes_path=True,
            fine_tunes=True,
        ),
    )
}
FAMILIES = ("tv", "batch-norm", "generative")


@dataclass(frozen=True)
class PriorSpec:
    """One `--prior` value, parsed.

    Attributes:
        kind: a name of `PRIOR_KINDS`.
        weight: the weight given with `:W` (None: the kind's default).
        path: the trained prior's file, for `gan` and `gias`.
    """

    kind: str
    weight: float | None = None
    path: str = ""

    @property
    def info(self) -> PriorKind:
        """What kind of prior this is (`PRIOR_KINDS`)."""
        return PRIOR_KINDS[self.kind]

    def __str__(self) -> str:
        if self.path:
            return f"{self.kind}:{self.path}"
        return self.kind if self.weight is None else f"{self.kind}:{self.weight:g}"


def parse_prior(text: str) -> PriorSpec:
    """Parse `tv[:W]`, `bn[:W]`, `bn-server[:W]`, `bn-client[:W]`, `gan:PATH` or `gias:PATH`.

    Args:
        text: the spec as given to `--prior` or in the attack's `priors` option.

    Returns:
        The parsed spec.

    Raises:
        GradleakError: an unknown kind, a weight that is not a finite number >= 0, or a
            generative prior without its file (one line naming the choices).
    """
    name, _, rest = str(text).partition(":")
    kind = PRIOR_KINDS.get(name.strip())
    if kind is None:
        raise GradleakError(
            f"unknown prior {text!r}; choose one of: "
            + ", ".join(f"{k}:PATH" if v.takes_path else f"{k}[:W]" for k, v in PRIOR_KINDS.items())
        )
    if kind.takes_path:
        if not rest:
            raise GradleakError(
                f"prior {kind.name!r} needs its file: --prior {kind.name}:PRIOR.pt "
                "(gradleak train-prior makes one)"
            )
        return PriorSpec(kind.name, path=rest)
    if not rest:
        return PriorSpec(kind.name)
    try:
        weight = float(rest)
    except ValueError:
        weight = math.nan
    if not (weight >= 0 and math.isfinite(weight)):
        raise GradleakError(
            f"prior {text!r}: the weight after ':' must be a number >= 0, e.g. {kind.name}:0.01"
        )
    return PriorSpec(kind.name, weight)


def parse_priors(texts: Sequence[str]) -> tuple[PriorSpec, ...]:
    """Parse several specs; at most one generative prior and one batch-norm prior.

    Raises:
        GradleakError: as `parse_prior`, or when a family is named twice.
    """
    specs = tuple(parse_prior(t) for t in texts)
    for family in FAMILIES:
        chosen = [str(s) for s in specs if s.info.family == family]
        if len(chosen) > 1:
            raise GradleakError(
                f"one {family} prior at a time, got {', '.join(chosen)}; keep one --prior of them"
            )
    return specs


def prior_of(specs: Sequence[PriorSpec], family: str) -> PriorSpec | None:
    """The spec of `family` among `specs` (one at most, `parse_priors`), or None."""
    return next((s for s in specs if s.info.family == family), None)


def batch_norm_layers(model: nn.Module) -> dict[str, nn.modules.batchnorm._BatchNorm]:
    """The model's batch-norm layers by module name."""
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm)
    }


@dataclass(frozen=True)
class BatchNormTargets:
    """The statistics the batch-norm prior pulls the candidate's features toward.

    Attributes:
        source: where they come from, for reports ("server running statistics" or
            "client batch statistics").
        means: per batch-norm layer (module name), the target mean of its input channels.
        variances: the same layers' target (unbiased) variances.
    """

    source: str
    means: Mapping[str, torch.Tensor]
    variances: Mapping[str, torch.Tensor]


def _require_batch_norm(model: nn.Module, what: str) -> dict[str, nn.modules.batchnorm._BatchNorm]:
    layers = batch_norm_layers(model)
    if not layers:
        raise GradleakError(
            f"{what} needs a model with batch norm, and this one has none; drop the bn prior "
            "or attack a model with batch-norm layers (e.g. --model resnet20)"
        )
    return layers


def server_statistics(model: nn.Module) -> BatchNormTargets:
    """The running statistics of the server's model (the server owns them).

    Args:
        model: the server's model.

    Returns:
        Its batch-norm layers' running means and variances.

    Raises:
        GradleakError: the model has no batch norm, or its batch norm keeps no running
            statistics.
    """
    layers = _require_batch_norm(model, "the bn prior")
    missing = [n for n, m in layers.items() if m.running_mean is None or m.running_var is None]
    if missing:
        raise GradleakError(
            f"the server's model keeps no running statistics in {missing[0]}; use "
            "--prior bn-client with --share-buffers, or drop the bn prior"
        )
    return BatchNormTargets(
        "server running statistics",
        {n: m.running_mean.detach().clone() for n, m in layers.items()},
        {n: m.running_var.detach().clone() for n, m in layers.items()},
    )


def client_statistics_readable(
    update: SharedUpdate, *, users: int, one_forward: bool, model_mode: str
) -> str | None:
    """Why the client's batch statistics cannot be read from `update` (None: they can).

    They can when the client shared its buffers (`--share-buffers`) after exactly one
    forward pass (one gradient of one user) in train mode, where the forward pass moves
    the running statistics; in eval mode the buffers are the server's.

    Args:
        update: the shared update.
        users: the users whose updates were averaged.
        one_forward: the update came from one forward pass (FedSGD).
        model_mode: the client's batch-norm mode as the attacker knows or guesses it.

    Returns:
        The reason, as the end of a sentence with its fix; None when readable.
    """
    if not update.buffers:
        return (
            "this update carries no batch-norm buffers; add --share-buffers (the clients then "
            "send them) or use --prior bn-server"
        )
    if model_mode != "train":
        return (
            "a client in eval mode leaves its running statistics as the server sent them; "
            "use --prior bn-server, or --model-mode train"
        )
    if update.kind is not UpdateKind.GRADIENT or not one_forward:
        return (
            "the update came from several forward passes (local training), whose statistics "
            "the buffers mix; use --prior bn-server or --protocol fedsgd"
        )
    if users != 1:
        return f"the update averages {users} users' buffers; use --users 1 or --prior bn-server"
    return None


def client_statistics(
    model: nn.Module, update: SharedUpdate, *, users: int, one_forward: bool, model_mode: str
) -> BatchNormTargets:
    """The client's batch statistics, read from the running statistics it shared.

    A client in train mode updates every running statistic once per forward pass,
    r' = (1 − m)·r + m·s, with m the layer's momentum and s the batch's statistic (the
    unbiased variance for r = running_var), or with momentum None the cumulative average
    r' = r + (s − r)/(n + 1), n the server's `num_batches_tracked`. Knowing r (the server's
    model) and r' (the shared buffers), the attacker solves for s exactly.

    Args:
        model: the server's model (its running statistics are r).
        update: the shared update; its `buffers` are r'.
        users: the users whose updates were averaged (the reading needs one).
        one_forward: whether the update came from one forward pass (FedSGD); after several
            local steps the buffers mix several batches' statistics.
        model_mode: the client's batch-norm mode (train mode moves the statistics).

    Returns:
        The batch's mean and unbiased variance at every batch-norm layer.

    Raises:
        GradleakError: when the model has no batch norm or the statistics cannot be read
            (`client_statistics_readable`), or the buffers lack a layer's statistics.
    """
    layers = _require_batch_norm(model, "the bn-client prior")
    why = client_statistics_readable(
        update, users=users, one_forward=one_forward, model_mode=model_mode
    )
    if why is not None:
        raise GradleakError(f"--prior bn-client reads the client's batch statistics, but {why}")
    means, variances = {}, {}
    for name, layer in layers.items():
        shared_mean = update.buffers.get(f"{name}.running_mean")
        shared_var = update.buffers.get(f"{name}.running_var")
        if shared_mean is None or shared_var is None or layer.running_mean is None:
            raise GradleakError(
                f"the shared buffers lack {name}'s running statistics; use --prior bn-server"
            )
        if layer.momentum is None:  # cumulative average: the factor is 1 / (batches + 1)
            tracked = layer.num_batches_tracked
            m = 1.0 / (float(tracked) + 1.0) if tracked is not None else 1.0
        else:
            m = float(layer.momentum)
        means[name] = (shared_mean.float() - (1 - m) * layer.running_mean) / m
        variances[name] = (shared_var.float() - (1 - m) * layer.running_var) / m
    return BatchNormTargets("client batch statistics", means, variances)


class BatchNormPrior:
    """Σ_l ‖μ_l(x) − μ*_l‖₂ + ‖σ²_l(x) − σ²*_l‖₂ over the model's batch-norm layers (pure).

    μ_l(x) and σ²_l(x) are the per-channel mean and unbiased variance of the features
    entering layer l when the candidate batch x runs through the attacker's replica, in the
    client's batch-norm mode. The prior keeps its own copy of the replica, so its hooks
    never see the forward passes of the gradient being matched.

    Args:
        replica: the attacker's replica (`attacker_model`), copied.
        params: the parameters to run it with (the server's), by name.
        buffers: its buffers, by name.
        targets: the target statistics.
        weight: the prior's weight.
    """

    def __init__(
        self,
        replica: nn.Module,
        params: Mapping[str, torch.Tensor],
        buffers: Mapping[str, torch.Tensor],
        targets: BatchNormTargets,
        weight: float,
    ) -> None:
        self.model = copy.deepcopy(replica)
        self.params = dict(params)
        self.buffers = dict(buffers)
        self.targets = targets
        self.weight = float(weight)
        self._seen: list[tuple[str, torch.Tensor]] = []
        for name, layer in batch_norm_layers(self.model).items():
            if name in targets.means:
                layer.register_forward_pre_hook(self._hook(name))

    def _hook(self, name: str) -> Callable[[nn.Module, tuple[torch.Tensor, ...]], None]:
        def record(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            self._seen.append((name, args[0]))

        return record

    def statistics(self, images: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """The candidate batch's (mean, unbiased variance) at every targeted layer."""
        self._seen = []
        try:
            functional_call(self.model, (self.params, self.buffers), (images,))
            seen = list(self._seen)
        finally:
            self._seen = []
        stats = {}
        for name, features in seen:
            dims = [0, *range(2, features.dim())]
            stats[name] = (features.mean(dim=dims), features.var(dim=dims, unbiased=True))
        return stats

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        total = images.new_zeros(())
        for name, (mean, var) in self.statistics(images).items():
            total = total + torch.linalg.vector_norm(mean - self.targets.means[name])
            total = total + torch.linalg.vector_norm(var - self.targets.variances[name])
        return self.weight * total


def bn_weight(spec: PriorSpec) -> float:
    """The spec's weight, or the batch-norm prior's default."""
    return BN_DEFAULT_WEIGHT if spec.weight is None else spec.weight
