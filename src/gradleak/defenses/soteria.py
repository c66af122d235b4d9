"""Soteria: prune the classifier's weight gradient where the representation leaks most.

Sun, Li, Wang, Chen, Li and Chen, "Soteria: Provable Defense against Privacy Leakage in
Federated Learning from Representation Perspective", CVPR 2021 (arXiv:2012.06043). The
paper perturbs the data representation r (the input of the fully connected layer that
consumes the flattened features) so that an input reconstructed from the perturbed
gradient is as far as possible from the real one. Removing one feature r_i moves the
reconstruction by about ‖r_i‖ / ‖∂r_i/∂X‖, so the features worth removing are those with
the smallest ‖∂r_i/∂X‖ / ‖r_i‖; removing them means zeroing column i of that layer's
weight gradient, the only place r_i enters the update (∂L/∂W = Σ_b δ_b r_bᵀ).

What is computed here, following the authors' reference code (github.com/jeremy313/Soteria,
`reconstruct_image.py` and `Defend_DLG.ipynb`), on a copy of the client's model in its own
batch-norm mode and the client's batch X (B samples):

1. r = the input of the model's classifier Linear (`classifier_layer`), B×D. For lenet,
   convnet and the resnets that is the flattened (pooled) feature map; for mlp, the last
   hidden layer's output.
2. For each feature i: d = ∂(Σ_b r_{b,i})/∂X by one backward pass, and for each sample
   q_{b,i} = ‖d_b‖ / |r_{b,i}| (‖·‖ the L2 norm over the sample's pixels). Without batch
   statistics d_b = ∂r_{b,i}/∂x_b; with BatchNorm in training mode d_b also carries the
   other samples' coupling through the batch statistics, as in the reference code.
   A sample on which both the feature and its derivative are 0 (a dead ReLU unit)
   contributes 0, as in the reference code (which scores it 0 / (0 + 0.1)); a zero
   feature with a non-zero derivative contributes +inf.
3. score_i = Σ_b q_{b,i}. The round(PERCENT/100 · D) features of smallest score (halves
   round up; equal scores by index, the lower pruned first) have their column of the
   classifier's weight gradient set to 0. Every other tensor and column is unchanged.

Differences from the reference code: the pruned count is exact instead of np.percentile's
"score < threshold", and there is no +0.1 in the denominator (the DLG notebook has none;
the GS script adds 0.1, which depends on the scale of r).

Cost: D backward passes through the feature extractor (768 for lenet on 32×32 images).

Soteria reads the client's model and batch only to choose the columns; the values it shares
are the incoming update's, so it may follow other defenses. The scores do not depend on the
update, so a larger share zeroes every column a smaller one does: a chain holds one Soteria.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from gradleak.core.errors import GradleakError
from gradleak.core.update import SharedUpdate
from gradleak.defenses.accounting import GaussianMechanism
from gradleak.defenses.arguments import check_count, parse_number
from gradleak.defenses.base import ChainRole, ClientView, Family, require_client, with_tensors
from gradleak.models import classifier_layer

NAME = "soteria"
USAGE = (
    "soteria:PERCENT with PERCENT in [0, 100) the share of representation features whose "
    "classifier weight-gradient columns are zeroed (e.g. soteria:60)"
)
PERCENT_RANGE = "in [0, 100)"
HELP = "Soteria: zero the classifier weight-gradient columns of the most revealing features"

SOTERIA = Family(
    "zero the classifier columns of the features Soteria scores most revealing",
    "the larger share zeroes every column the smaller one does",
)


def pruned_features(percent: float, features: int) -> int:
    """round(percent/100 · features), halves rounded up."""
    return min(features, math.floor(percent * features / 100 + 0.5))


def feature_scores(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Soteria's score Σ_b ‖∂r_i/∂x_b‖ / |r_{b,i}| of each classifier input feature i.

    float64, one entry per input feature of `classifier_layer(model)`; the features with
    the smallest scores leak the most. `model` is copied, so its buffers stay as they were.
    """
    clone = copy.deepcopy(model)
    for parameter in clone.parameters():
        parameter.requires_grad_(False)  # derivatives with respect to the images only
    _, layer = classifier_layer(clone)
    captured: list[torch.Tensor] = []
    hook = layer.register_forward_pre_hook(lambda _module, args: captured.append(args[0]))
    x = images.detach().clone().requires_grad_(True)
    try:
        clone(x)
    finally:
        hook.remove()
    representation = captured[0]
    if representation.dim() != 2 or representation.shape[0] != x.shape[0]:
        raise GradleakError(
            f"Soteria needs the classifier's input as one feature vector per sample, got "
            f"shape {tuple(representation.shape)}; use a model whose classifier Linear "
            "takes the flattened features"
        )
    values = representation.detach().abs().double()
    features = representation.shape[1]
    # Filled on the model's device and read back once: no wait for the device per feature.
    scores = torch.zeros(features, dtype=torch.float64, device=values.device)
    selector = torch.zeros_like(representation)
    for i in range(features):
        selector[:, i] = 1
        (derivative,) = torch.autograd.grad(
            representation,
            x,
            selector,
            retain_graph=i < features - 1,
            allow_unused=True,
            materialize_grads=True,
        )
        selector[:, i] = 0
        norms = derivative.flatten(1).norm(dim=1).double()
        ratios = norms / values[:, i]
        ratios = torch.where((norms == 0) & (values[:, i] == 0), 0.0, ratios)
        scores[i] = ratios.sum()
    return scores.cpu()


def _check_percent(percent: float) -> None:
    if not 0 <= percent < 100:  # also rejects NaN
        raise GradleakError(f"soteria percent must be {PERCENT_RANGE}, got {percent}")


@dataclass(frozen=True)
class Soteria:
    """Zero the classifier weight-gradient columns of the `percent`% most revealing features.

    Spelled `soteria:PERCENT`; how the features are scored is described at the top of
    this module.

    Args:
        percent: the share of the classifier's input features to prune, in percent, in
            [0, 100); round(percent/100 · D) of the D features are pruned, halves up.

    Raises:
        GradleakError: when `percent` is outside [0, 100) or NaN.
    """

    percent: float

    role: ClassVar[ChainRole] = ChainRole(family=SOTERIA)
    mechanism: ClassVar[GaussianMechanism | None] = None

    def __post_init__(self) -> None:
        _check_percent(self.percent)
        object.__setattr__(self, "percent", float(self.percent))

    @property
    def spec(self) -> str:
        """`soteria:PERCENT`, which `parse_defense` reads back as an equal defense."""
        return f"{NAME}:{self.percent!r}"

    def apply(
        self,
        update: SharedUpdate,
        generator: torch.Generator,
        client: ClientView | None = None,
    ) -> SharedUpdate:
        """Zero the classifier weight-gradient columns of the lowest-scoring features.

        The scores come from the client's model (on a copy) and batch; when no feature is
        to be pruned they are not computed. Nothing is drawn.

        Args:
            update: an update of the client's model holding its classifier's weight
                tensor; left unchanged.
            generator: unused (Soteria is deterministic).
            client: the client's model (in its batch-norm mode) and its batch; required.

        Returns:
            A new update in which only the classifier weight tensor differs: its pruned
            columns are zero. Kind, metadata and buffers are `update`'s.

        Raises:
            GradleakError: when `client` is None.
            GradleakError: when the client's model has no nn.Linear layer.
            GradleakError: when the update lacks the classifier weight, in its shape.
            GradleakError: when the classifier's input is not one vector per sample.
        """
        view = require_client(client, self.spec)
        layer_name, layer = classifier_layer(view.model)
        key = f"{layer_name}.weight" if layer_name else "weight"
        weight = update.tensors.get(key)
        if weight is None or tuple(weight.shape) != tuple(layer.weight.shape):
            raise GradleakError(
                f"defense {self.spec!r} needs the update's {key!r} tensor of shape "
                f"{tuple(layer.weight.shape)} (the client model's classifier weight); apply "
                "it to the update of the client whose model is given"
            )
        count = pruned_features(self.percent, layer.in_features)
        if count == 0:
            return with_tensors(update, update.tensors)
        scores = feature_scores(view.model, view.batch.images)
        pruned = torch.argsort(scores, stable=True)[:count]
        keep = torch.ones(layer.in_features, dtype=torch.bool, device=scores.device)
        keep[pruned] = False
        tensors = dict(update.tensors)
        tensors[key] = torch.where(keep.to(weight.device), weight, torch.zeros_like(weight))
        return with_tensors(update, tensors)


def parse(args: list[str]) -> Soteria:
    """`soteria:PERCENT`."""
    check_count(NAME, args, USAGE, 1, 1)
    return Soteria(parse_number(args[0], "soteria percent", PERCENT_RANGE))
