"""Robbing the Fed: a malicious server's imprint layer, and the images read back from it.

Fowl et al. (ICLR 2022) let a server that may alter the model it sends put a fully
connected "imprint" block in front of it. Every one of the block's K neurons computes the
same statistic of the input image, s = w·x, and fires when s passes its own threshold:
neuron i outputs relu(s − q_i) with thresholds q_1 < … < q_K placed at the quantiles of the
statistic's assumed distribution, so each of the K intervals between them ("bins") catches
an equal share of images. The block adds the mean of its outputs to every pixel and hands
the image on to the server's own model, which therefore runs almost as before.

Because every neuron's output reaches the loss the same way, the loss gradient at neuron i
is the same number g_n for every neuron image n activates. Neuron i's weight gradient is
therefore Σ_{n: s_n > q_i} g_n x_n and its bias gradient Σ_{n: s_n > q_i} g_n; subtracting
neuron i + 1's leaves only the images whose statistic falls between q_i and q_{i+1}. When
that bin holds one image, (∂W_i − ∂W_{i+1}) / (∂b_i − ∂b_{i+1}) is that image exactly; when
it holds several, a mixture of them. Gradients are batch means and a weight difference
after local SGD is −lr times a sum of them: both factors cancel in the ratio. The same
reading holds for FedAvg's local steps (each step's g_n differs, x_n does not) and for
several users' updates averaged, as long as the bins hardly move during local training,
which the block's small gradients ensure.

Images whose statistic falls below q_1 (a share 1/(K + 1) under the assumed distribution)
fire no neuron and are lost; two images in one bin give one mixture. So the attack
recovers a batch of B exactly only when its images fall in distinct bins above q_1, which
becomes likely once K ≫ B².
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from gradleak.attacks.closed_form.base import (
    ClosedFormAttack,
    check_no_iterations,
    closed_form_result,
)
from gradleak.attacks.engine.hooks import Observer
from gradleak.attacks.reconstruction import Reconstruction
from gradleak.core.device import physical_memory
from gradleak.core.errors import GradleakError
from gradleak.core.knowledge import Knowledge, Requirement
from gradleak.core.update import SharedUpdate, UpdateKind

# The imprint block's parameters in the model the server sends: `ImprintedModel.imprint`.
IMPRINT_WEIGHT = "imprint.linear.weight"
IMPRINT_BIAS = "imprint.linear.bias"

# A bin counts as holding an image when its bias-gradient difference exceeds this fraction
# of the largest one: empty bins' differences are exact zeros (the two neurons' sums run
# over the same images), so any rounding-level value is noise, not an image.
OCCUPIED_FRACTION = 1e-6
# Two bins read the same input when their ratios agree to this relative distance: one input
# split over bins by local training agrees to float rounding (≈1e-7); distinct images, or
# mixtures, differ by far more.
SAME_INPUT = 1e-4
# Bins read per input asked for: an input that local training moved across a few bins
# still has all its parts among them.
CANDIDATES_PER_INPUT = 4


@dataclass(frozen=True)
class ImprintStatistic:
    """The statistic an imprint block's neurons compute, and its assumed spread.

    Attributes:
        direction: builds the vector w of s = w·x for inputs of `size` values, from a
            generator (a random statistic draws from it).
        assumed_std: the standard deviation the attacker assumes s has over the clients'
            normalised images; the bins sit at the quantiles of N(0, assumed_std²).
        description: what the statistic is, in one line.
    """

    direction: Callable[[int, torch.Generator], torch.Tensor]
    assumed_std: float
    description: str


def _random_direction(size: int, generator: torch.Generator) -> torch.Tensor:
    w = torch.randn(size, generator=generator, dtype=torch.float64)
    return w / torch.linalg.vector_norm(w)


def _mean_direction(size: int, generator: torch.Generator) -> torch.Tensor:
    return torch.full((size,), 1.0 / size, dtype=torch.float64)


STATISTICS: dict[str, ImprintStatistic] = {
    # Over normalised images every pixel has variance 1, so a random unit direction w
    # gives s a variance wᵀΣw whose mean over directions is tr(Σ)/d = 1, whatever the
    # pixels' correlations: the assumption holds for any data (measured: 0.96 on CIFAR-10,
    # 0.88 on MNIST, public images 100-599).
    "random": ImprintStatistic(
        _random_direction, 1.0, "a fixed random projection of the image (assumed N(0, 1))"
    ),
    # The mean pixel's spread depends on how correlated an image's pixels are: 0.50 on
    # CIFAR-10's public images 100-599, 0.13 on MNIST's; the default assumes CIFAR-like
    # photos (set stat_std for other data).
    "mean": ImprintStatistic(
        _mean_direction, 0.5, "the image's mean normalised pixel (assumed N(0, 0.5²))"
    ),
}


def bin_thresholds(bins: int, std: float) -> torch.Tensor:
    """The K thresholds q_1 < … < q_K: the i/(K+1) quantiles of N(0, std²), float64.

    Args:
        bins: K, the number of neurons, at least 2.
        std: the assumed standard deviation of the statistic, positive.

    Returns:
        K increasing thresholds; the K + 1 intervals they cut N(0, std²) into are equally
        likely, the lowest one (below q_1) fires no neuron.
    """
    levels = torch.arange(1, bins + 1, dtype=torch.float64) / (bins + 1)
    return std * torch.special.ndtri(levels)


class ImprintBlock(nn.Module):
    """K neurons relu(w·x − q_i + ε(V_i·x + c_i)) sharing one statistic; their mean joins
    every input element.

    The statistic's direction w and the thresholds q_i are fixed buffers; the trainable
    weight V (K × d) and bias c (K) start at zero, so every neuron starts as relu(w·x − q_i),
    and the gradients of V and c are ε times those of a Linear layer holding w and −q, which
    the attack reads the same way. Starting the trained part at zero keeps a weight
    difference after local training exact in float32: on a layer holding −q itself the
    small updates of one image would be lost to rounding against |q| ≈ 3. ε = 1/√d keeps
    local training from moving the bins: a step moves an image's own statistic by
    lr·ε²·|x|²·(its gradient), and |x|² ≈ d for normalised images, so the move does not grow
    with the image's size. The block adds `gain` times the neurons' mean to every input
    element: small, so the server's model runs almost as before; the block's gradients
    (and what a noise defense has to drown) grow with it.

    Args:
        direction: w, one value per input element.
        thresholds: q_1 < … < q_K.
        gain: how strongly the neurons' mean is added to the input, positive.
    """

    def __init__(self, direction: torch.Tensor, thresholds: torch.Tensor, gain: float) -> None:
        super().__init__()
        bins, size = thresholds.numel(), direction.numel()
        # A plain Linear (zeroed), so per-sample gradient tools (Opacus's DP-SGD) know it;
        # built without its random init, which would draw from the global generator.
        self.linear = nn.utils.skip_init(nn.Linear, size, bins, bias=True)
        with torch.no_grad():
            self.linear.weight.zero_()
            self.linear.bias.zero_()
        self.register_buffer("direction", direction.reshape(size).float())
        self.register_buffer("thresholds", thresholds.reshape(bins).float())
        self.register_buffer("gain", torch.tensor(float(gain)))
        self.register_buffer("step", torch.tensor(1.0 / math.sqrt(size)))

    @property
    def bins(self) -> int:
        """K, the block's neurons."""
        return self.linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        statistic = (flat @ self.direction).unsqueeze(1) - self.thresholds
        trained = self.linear(flat)
        fired = torch.relu(statistic + self.step * trained)
        # One number per image, the same path to the loss for every neuron: what makes the
        # bins' gradients differ only by the images they hold.
        shift = self.gain * fired.mean(dim=1)
        return x + shift.reshape(-1, *([1] * (x.dim() - 1)))


class ImprintedModel(nn.Module):
    """The model a malicious server sends: its imprint block, then its own model (`body`)."""

    def __init__(self, imprint: ImprintBlock, body: nn.Module) -> None:
        super().__init__()
        self.imprint = imprint
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.imprint(x))


@dataclass(frozen=True)
class ImprintReading:
    """Inputs read from an imprint block's update, and the bins behind them.

    Attributes:
        features: count × d, one input per row, heaviest first (zeros where fewer distinct
            inputs were found).
        bins: for each row, the bins it was read from (several when local training moved
            an input across bins; empty for a zero row).
        occupied: how many bins hold at least one input.
        found: how many distinct inputs the occupied bins gave.
        masses: for each row, the summed |∂b_i − ∂b_{i+1}| of its bins.
    """

    features: torch.Tensor
    bins: tuple[tuple[int, ...], ...]
    occupied: int
    found: int
    masses: tuple[float, ...]


def read_imprint(
    weight: torch.Tensor, bias: torch.Tensor, count: int, *, same: float = SAME_INPUT
) -> ImprintReading:
    """The `count` heaviest distinct inputs held by an imprint block's update.

    Bin i holds the inputs whose statistic lies between neuron i's threshold and neuron
    i + 1's (the last bin: above the last threshold); its input is the ratio of the
    differences of the two neurons' weight and bias updates. A weight difference after
    several local steps may hold one input in several bins (its statistic crossed a
    threshold as the block trained); each of them reads the same input, so bins whose
    inputs agree within `same` are merged and their masses summed. Computed in float64
    and returned in the update's dtype.

    Args:
        weight: the block's weight update, K × d (a gradient or a weight difference).
        bias: its bias update, K.
        count: how many inputs to return (the batch size), at least 1.
        same: two bins hold the same input when their inputs differ by at most this
            fraction of the heavier one's norm (default `SAME_INPUT`).

    Returns:
        The `count` distinct inputs of largest mass, the bins behind each, the number of
        occupied bins and of distinct inputs found; all zeros when every bin is empty.

    Raises:
        GradleakError: when the shapes do not fit an imprint block, or `count` is not a
            positive integer.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise GradleakError(f"count must be a positive integer, got {count!r}")
    if weight.dim() != 2 or bias.shape != (weight.shape[0],):
        raise GradleakError(
            f"an imprint update needs a K×d weight and a K bias, got {tuple(weight.shape)} and "
            f"{tuple(bias.shape)}; attack the update of the model imprint sent"
        )
    b = bias.double()
    mass = b - torch.cat([b[1:], b.new_zeros(1)])
    scale = mass.abs().max().item()
    if not scale > 0:
        # No image fired a neuron (all below the lowest threshold, or a defense zeroed the
        # block's update): the attack recovers nothing, which is a result, not an error.
        return ImprintReading(
            features=weight.new_zeros(count, weight.shape[1]),
            bins=((),) * count,
            occupied=0,
            found=0,
            masses=(0.0,) * count,
        )
    held = (mass.abs() > OCCUPIED_FRACTION * scale).nonzero().flatten()
    # The heaviest occupied bins, enough for every input to be split a few times (under a
    # noise defense every bin is "occupied": only the heaviest can hold an input).
    order = held[mass[held].abs().argsort(descending=True)][: CANDIDATES_PER_INPUT * count]
    nxt = torch.where(order + 1 < weight.shape[0], order + 1, order)
    following = weight[nxt].double() * (order + 1 < weight.shape[0]).unsqueeze(1)
    inputs = (weight[order].double() - following) / mass[order].unsqueeze(1)
    groups: list[list[int]] = []  # positions in `order`, the heaviest first in each
    for position in range(order.numel()):
        home = _same_input(inputs, [g[0] for g in groups], position, same)
        if home is None:
            groups.append([position])
        else:
            groups[home].append(position)
    weights = [float(mass[order[g]].abs().sum()) for g in groups]
    kept = sorted(range(len(groups)), key=lambda k: -weights[k])[:count]
    features = weight.new_zeros(count, weight.shape[1], dtype=torch.float64)
    for row, k in enumerate(kept):
        features[row] = inputs[groups[k][0]]
    return ImprintReading(
        features=features.to(weight.dtype),
        bins=tuple(tuple(int(order[p]) for p in groups[k]) for k in kept)
        + ((),) * (count - len(kept)),
        occupied=int(held.numel()),
        found=len(groups),
        masses=tuple(weights[k] for k in kept) + (0.0,) * (count - len(kept)),
    )


def _same_input(inputs: torch.Tensor, heads: list[int], position: int, same: float) -> int | None:
    """The group whose head reads the same input as `position`, if any."""
    if not heads:
        return None
    candidate = inputs[position]
    distances = torch.linalg.vector_norm(inputs[heads] - candidate, dim=1)
    sizes = torch.linalg.vector_norm(inputs[heads], dim=1).clamp_min(1e-300)
    close = (distances <= same * sizes).nonzero().flatten()
    return int(close[0]) if close.numel() else None


@dataclass(frozen=True)
class ImprintConfig:
    """Options of the imprint attack.

    Attributes:
        bins: the imprint block's neurons K (bins), at least 2.
        statistic: what the neurons measure, a key of `STATISTICS` (random, mean).
        stat_std: the statistic's assumed standard deviation over normalised images
            (None: the statistic's own assumption, `ImprintStatistic.assumed_std`).
        gain: how strongly the block's mean output is added to the input (`ImprintBlock`):
            smaller keeps the bins still over more local steps and the model's function
            closer to the original; the block's gradients, and so what a noise defense has
            to drown, grow with it.
        iterations: fixed at 0 (a closed form).
        restarts: fixed at 1.
    """

    bins: int = 256
    statistic: str = "random"
    stat_std: float | None = None
    gain: float = 0.1
    iterations: int = 0
    restarts: int = 1

    def validate(self) -> ImprintConfig:
        """This config, checked.

        Returns:
            The config itself.

        Raises:
            GradleakError: fewer than 2 bins, an unknown statistic, a non-positive
                stat_std or gain, or iterations/restarts other than 0/1 (one line each).
        """
        if isinstance(self.bins, bool) or not isinstance(self.bins, int) or self.bins < 2:
            raise GradleakError(
                f"imprint needs at least 2 bins, got {self.bins!r}; pass e.g. --bins 256"
            )
        if self.statistic not in STATISTICS:
            raise GradleakError(
                f"unknown imprint statistic {self.statistic!r}; choose one of: "
                f"{', '.join(STATISTICS)}"
            )
        if self.stat_std is not None and not (self.stat_std > 0 and math.isfinite(self.stat_std)):
            raise GradleakError(f"stat_std must be a positive number, got {self.stat_std}")
        if not (self.gain > 0 and math.isfinite(self.gain)):
            raise GradleakError(f"the imprint gain must be positive, got {self.gain}")
        check_no_iterations(self.iterations, self.restarts, "the imprint attack")
        return self


class ImprintAttack(ClosedFormAttack):
    """A malicious server's imprint block in front of its model, read back bin by bin."""

    default_name = "imprint"
    config_type = ImprintConfig

    @property
    def reads(self) -> frozenset[UpdateKind]:
        """Gradients and weight differences: the bins' ratios cancel −lr and the steps.

        Returns:
            {GRADIENT, WEIGHT_DELTA}.
        """
        return frozenset({UpdateKind.GRADIENT, UpdateKind.WEIGHT_DELTA})

    @property
    def statistic(self) -> ImprintStatistic:
        """The statistic the block's neurons compute (`STATISTICS[config.statistic]`)."""
        return STATISTICS[self.config.statistic]

    @property
    def assumed_std(self) -> float:
        """The statistic's assumed spread: `stat_std` if set, else the statistic's own."""
        return self.config.stat_std or self.statistic.assumed_std

    def modify_model(self, model: nn.Module, knowledge: Knowledge, *, seed: int = 0) -> nn.Module:
        """The server's model behind an imprint block with `bins` neurons.

        Args:
            model: the server's honest model (left unchanged; the result holds a copy).
            knowledge: must grant `Requirement.MODIFY_MODEL`; gives the input shape.
            seed: seeds the direction of the random statistic.

        Returns:
            An `ImprintedModel` on `model`'s device and dtype; its parameters are the
            block's (`imprint.linear.weight`, `imprint.linear.bias`) then the model's
            under `body.`.

        Raises:
            GradleakError: when the threat model has an honest server, or the block would
                not fit in the machine's memory.
        """
        knowledge.require({Requirement.MODIFY_MODEL}, f"attack '{self.name}'")
        size = math.prod(knowledge.data_shape)
        self._check_memory(size)
        generator = torch.Generator().manual_seed(seed)
        direction = self.statistic.direction(size, generator)
        thresholds = bin_thresholds(self.config.bins, self.assumed_std)
        block = ImprintBlock(direction, thresholds, self.config.gain)
        reference = next(model.parameters(), None)
        if reference is not None:
            block = block.to(device=reference.device, dtype=reference.dtype)
        return ImprintedModel(block, copy.deepcopy(model))

    def _check_memory(self, size: int) -> None:
        """Refuse a block whose weight, with its update, exceeds the machine's memory."""
        memory = physical_memory()
        needed = 2 * self.config.bins * size * 4  # float32 weight and its update
        if memory is not None and needed > memory:
            raise GradleakError(
                f"an imprint block of {self.config.bins} bins on inputs of {size} values needs "
                f"{needed / 2**30:.1f} GiB with its update, more than this machine's "
                f"{memory / 2**30:.1f} GiB; use fewer --bins or smaller images"
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
        """Read the batch's images from the imprint block's update.

        Args:
            update: the clients' update of the model `modify_model` returned (a gradient,
                or a weight difference after local training; users' updates averaged).
            model: that model (an `ImprintedModel` with this attack's bins).
            knowledge: must grant `Requirement.MODIFY_MODEL`; gives the shape and B.
            seed: unused (nothing is random here).
            observer: unused (nothing iterates).
            progress: unused.

        Returns:
            B images in the attacked (normalised) space, heaviest bin first (zeros where
            fewer than B bins hold images); labels from the `auto` strategy for
            gradients (none for a weight difference unless granted); loss 0 (nothing is
            matched); details: bins, statistic, stat_std, gain, occupied bins, distinct
            inputs found, images not separated (at least), empty rows returned, inputs
            split over bins, and the bins read.

        Raises:
            GradleakError: when the threat model has an honest server, the model is not
                the imprinted one, or the update does not fit it.
        """
        start = time.perf_counter()
        knowledge.require({Requirement.MODIFY_MODEL}, f"attack '{self.name}'")
        block = getattr(model, "imprint", None)
        if not isinstance(model, ImprintedModel) or not isinstance(block, ImprintBlock):
            raise GradleakError(
                f"attack '{self.name}' reads the update of the model it sent, but "
                f"{type(model).__name__} holds no imprint block; run it in a simulation, "
                "which sends the imprinted model to the clients"
            )
        if block.bins != self.config.bins:
            raise GradleakError(
                f"the model's imprint block has {block.bins} bins but the attack reads "
                f"{self.config.bins}; use the same --bins for both"
            )
        update.validate_for(model)
        b = knowledge.batch_size
        reading = read_imprint(update.tensors[IMPRINT_WEIGHT], update.tensors[IMPRINT_BIAS], b)
        images = reading.features.reshape(b, *knowledge.data_shape)
        details: dict[str, object] = {
            "bins": self.config.bins,
            "statistic": self.config.statistic,
            "stat_std": self.assumed_std,
            "gain": self.config.gain,
            "occupied_bins": reading.occupied,
            "distinct_inputs": reading.found,
            # B images but fewer distinct inputs: at least this many share a bin with
            # another or fell below the lowest threshold.
            "images_not_separated": max(0, b - reading.found),
            "empty_rows": sum(1 for bins in reading.bins if not bins),
            # Inputs read from several bins: local training moved them across thresholds.
            "split_inputs": sum(1 for bins in reading.bins if len(bins) > 1),
            "bins_read": [list(bins) for bins in reading.bins],
        }
        # A weight difference's last layer is read by no label strategy: labels come
        # only from the update of one gradient step, or the threat model.
        read_labels = update.kind is UpdateKind.GRADIENT or knowledge.labels_known
        return closed_form_result(
            images,
            update,
            model,
            knowledge,
            loss=0.0,
            start=start,
            details=details,
            read_labels=read_labels,
        )


def build() -> ImprintAttack:
    """The imprint attack with its defaults (256 bins of a random projection)."""
    return ImprintAttack()
