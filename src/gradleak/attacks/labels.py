"""Label strategies: where an optimisation attack gets the labels it matches with."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from gradleak.core.errors import GradleakError
from gradleak.core.knowledge import Knowledge, Requirement
from gradleak.core.update import SharedUpdate, UpdateKind
from gradleak.models import classifier_layer

# None means "no fixed labels: optimise soft labels jointly with the images".
LabelRecovery = Callable[[SharedUpdate, nn.Module, Knowledge], "torch.Tensor | None"]


@dataclass(frozen=True)
class LabelStrategy:
    """One way of getting the labels an optimisation attack matches with.

    Attributes:
        name: the strategy's name (`label_strategy` of the attack's settings).
        description: what it does, in one line.
        requires: what the threat model must grant (`Knowledge.require` is checked before
            `recover` runs): known labels, or a single sample.
        recover: (update, model, knowledge) → B integer labels, or None when the attack
            optimises soft labels jointly with the inputs ("optimize"). The update is what
            the attack's replay gives label strategies (`Replay.label_reading`): a gradient
            is itself; a FedAvg weight difference Δ comes as −Δ and a FedADMM increment as
            the mean gradient of the local steps it implies, both with the summed
            gradients' signs and their own kind. Strategies that read the last layer check
            the kind: "analytic" reads signs only and takes any; "sign", "yin" and "count"
            need a gradient's magnitudes and refuse the rest.
        recovers: whether the labels are a result of the attack (False for "known": the
            threat model handed them over, so they are not scored as a recovery).
        fixed: whether `recover` gives labels before the optimisation starts (False for
            "optimize", whose labels come out of the optimisation).
    """

    name: str
    description: str
    requires: frozenset[Requirement]
    recover: LabelRecovery
    recovers: bool = True  # False: the labels are handed over, so they are not a result
    fixed: bool = True


def idlg_label(update: SharedUpdate, model: nn.Module) -> torch.Tensor:
    """iDLG (Zhao et al. 2020): the one class whose last-layer gradient is negative.

    With softmax cross-entropy the bias gradient of the classifier is p − onehot(y), negative
    only at the true class; without a bias, the weight rows are (p − onehot(y))·features and
    features after a sigmoid/ReLU are non-negative, so the row sums give the same sign. Only
    signs are read, so any update with the gradient's signs serves (`LabelStrategy.recover`).

    Args:
        update: a batch-1 gradient, or a replay's label reading of another update,
            holding the classifier's (the model's last nn.Linear's) weight and, if it has
            one, bias.
        model: the server's model, to find the classifier's name.

    Returns:
        One int64 label, shape (1,): the argmin of the classifier's bias gradient, or of
        its weight gradient's row sums when it has no bias.

    Raises:
        GradleakError: when `model` has no nn.Linear or the update lacks its weight.
    """
    weight, bias = _classifier_grads(update, model, "analytic", reads=_ANY_KIND, need_bias=False)
    score = bias if bias is not None else weight.sum(dim=1)
    return score.argmin().reshape(1)


def _known(update: SharedUpdate, model: nn.Module, knowledge: Knowledge) -> torch.Tensor:
    assert knowledge.labels is not None  # guaranteed by the LABELS requirement
    return knowledge.labels


def _analytic(update: SharedUpdate, model: nn.Module, knowledge: Knowledge) -> torch.Tensor:
    return idlg_label(update, model)


def _optimize(update: SharedUpdate, model: nn.Module, knowledge: Knowledge) -> None:
    return None


# What the last-layer strategies accept: signs come through any label reading; magnitudes
# only from a gradient (those of −Δ depend on the unknown step sizes and step count, and a
# FedADMM increment's on its penalty terms).
_ANY_KIND = frozenset(UpdateKind)
_GRADIENT_ONLY = frozenset({UpdateKind.GRADIENT})


def _classifier_grads(
    update: SharedUpdate,
    model: nn.Module,
    who: str,
    *,
    reads: frozenset[UpdateKind] = _GRADIENT_ONLY,
    need_bias: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The classifier's weight gradient (C×F) and bias gradient (C, or None without a bias).

    Raises:
        GradleakError: the update is of a kind the strategy `who` does not read, or lacks
            the classifier's weight, or (with `need_bias`) the classifier has no bias.
    """
    if update.kind not in reads:
        raise GradleakError(
            f"label strategy '{who}' reads a gradient but the update is a {update.kind.value}; "
            "use it on FedSGD updates, or pick the 'analytic' (batch 1) or 'optimize' strategy"
        )
    name, _layer = classifier_layer(model)
    weight_name, bias_name = _qualified(name, "weight"), _qualified(name, "bias")
    weight = update.tensors.get(weight_name)
    if weight is None:
        raise GradleakError(
            f"update has no {weight_name} for label strategy '{who}'; "
            "attack it with the model that produced it"
        )
    bias = update.tensors.get(bias_name)
    if bias is None and need_bias:
        raise GradleakError(
            f"label strategy '{who}' needs a bias on the classifier '{name or 'the model'}' "
            "but the model has none; use 'sign' or 'yin' instead"
        )
    return weight.detach().double().flatten(1), None if bias is None else bias.detach().double()


def _qualified(module: str, parameter: str) -> str:
    """A parameter's name in `named_parameters`: a model that is the layer itself has no
    module prefix."""
    return f"{module}.{parameter}" if module else parameter


def _fill(ranked: torch.Tensor, distinct: int, batch_size: int) -> torch.Tensor:
    """B labels from classes ranked best first: the first `distinct` once each, then cycled."""
    distinct = max(1, min(distinct, batch_size, ranked.numel()))
    picks = ranked[:distinct]
    repeats = -(-batch_size // distinct)  # ceil: enough cycles to fill every slot
    return picks.repeat(repeats)[:batch_size].sort().values.long()


def sign_labels(update: SharedUpdate, model: nn.Module, knowledge: Knowledge) -> torch.Tensor:
    """Classes whose classifier bias gradient (else weight-row sum) is negative.

    Each present class c has g_c = mean_n(p_nc) − count_c/B, negative once it holds more than
    its share of the mean softmax; absent classes have g_c = mean_n(p_nc) > 0. Row sums of the
    weight gradient carry the same sign only when the features are non-negative (sigmoid,
    ReLU). The negative classes fill B slots, most negative first, cycled when there are fewer
    than B; with none negative (a zero gradient) the single most negative entry is used.

    Args:
        update: a gradient (FedSGD; the mean over users is the whole batch's gradient).
        model: the server's model, to find the classifier (its last nn.Linear).
        knowledge: gives the batch size B.

    Returns:
        B int64 labels, sorted ascending (the order of the batch is not recovered).

    Raises:
        GradleakError: when the update is not a gradient.
        GradleakError: when `model` has no nn.Linear or the update lacks its weight.
    """
    weight, bias = _classifier_grads(update, model, "sign", need_bias=False)
    score = bias if bias is not None else weight.sum(dim=1)
    negative = int((score < 0).sum())
    return _fill(score.argsort(stable=True), negative, knowledge.batch_size)


def yin_labels(update: SharedUpdate, model: nn.Module, knowledge: Knowledge) -> torch.Tensor:
    """GradInversion (Yin et al. 2021): the B classes with the most negative weight-row minima.

    Meant for batches without repeated labels: a present class has rows (p − 1)·features that
    dip strongly negative. For B > C every class is taken and the ranking is cycled.

    Args:
        update: a gradient (FedSGD).
        model: the server's model, to find the classifier (its last nn.Linear).
        knowledge: gives the batch size B.

    Returns:
        B int64 labels, sorted ascending; distinct when B ≤ the number of classes.

    Raises:
        GradleakError: when the update is not a gradient.
        GradleakError: when `model` has no nn.Linear or the update lacks its weight.
    """
    weight, _bias = _classifier_grads(update, model, "yin", need_bias=False)
    ranked = weight.min(dim=1).values.argsort(stable=True)
    return _fill(ranked, knowledge.batch_size, knowledge.batch_size)


# Dummy inputs the attacker runs through its own copy of the model to estimate mean softmax.
_PROBE_SAMPLES = 64
_PROBE_SEED = 0


def mean_softmax_estimate(model: nn.Module, knowledge: Knowledge) -> torch.Tensor:
    """The model's mean softmax over standard-normal inputs (normalised space), per class.

    An untrained network answers real and random images alike, so this stands in for the
    batch's mean prediction; a copy is run so batch-norm running statistics stay untouched.

    Args:
        model: the server's model (left unchanged).
        knowledge: gives the input shape and the batch-norm mode the copy runs in.

    Returns:
        A float64 CPU tensor of one probability per class (summing to 1): the softmax
        averaged over 64 seeded standard-normal inputs (the same every call).
    """
    probe = copy.deepcopy(model)
    probe.train(knowledge.model_mode == "train")
    generator = torch.Generator().manual_seed(_PROBE_SEED)
    param = next(probe.parameters())
    shape = (_PROBE_SAMPLES, *knowledge.data_shape)
    inputs = torch.randn(shape, generator=generator, device=generator.device)
    with torch.no_grad():
        logits = probe(inputs.to(device=param.device, dtype=param.dtype))
    return logits.double().softmax(dim=1).mean(dim=0).cpu()


def counts_from_bias(
    bias_grad: torch.Tensor, mean_softmax: torch.Tensor, batch_size: int
) -> torch.Tensor:
    """Per-class counts: B·(p̄_c − g_c), clipped at 0, rounded so they sum to B.

    With mean cross-entropy g_c = p̄_c − count_c/B exactly, where p̄ is the batch's mean
    softmax; any error in p̄ moves the counts by B·error. Rounding keeps the largest
    fractional parts (largest-remainder), so the total is exactly B.

    Computed in float64. The clipped values are rescaled to sum to B before rounding; when
    they are all zero the whole batch goes to the class with the most negative g_c.

    Args:
        bias_grad: the classifier's bias gradient g, one value per class.
        mean_softmax: the (estimated) mean softmax p̄ of the batch, one value per class.
        batch_size: B, >= 1.

    Returns:
        int64 counts, one per class, non-negative, summing to B.
    """
    raw = (batch_size * (mean_softmax.double() - bias_grad.double().cpu())).clamp(min=0.0)
    if float(raw.sum()) <= 0.0:  # nothing to go on: put the batch on the most negative class
        raw = torch.zeros_like(raw)
        raw[int(bias_grad.argmin())] = 1.0
    raw = raw * (batch_size / raw.sum())
    counts = raw.floor().long()
    missing = batch_size - int(counts.sum())
    if missing > 0:
        order = (raw - counts).argsort(descending=True, stable=True)
        counts[order[:missing]] += 1
    return counts


def count_labels(update: SharedUpdate, model: nn.Module, knowledge: Knowledge) -> torch.Tensor:
    """Label multiset from the bias gradient and an estimated mean softmax, as B sorted labels.

    `counts_from_bias` with p̄ from `mean_softmax_estimate`.

    Args:
        update: a gradient (FedSGD).
        model: the server's model: its classifier (last nn.Linear) must have a bias.
        knowledge: gives the batch size B, the input shape and the batch-norm mode.

    Returns:
        B int64 labels, sorted ascending, each class repeated as often as it was counted.

    Raises:
        GradleakError: when the update is not a gradient.
        GradleakError: when `model` has no nn.Linear, or its classifier has no bias.
        GradleakError: when the update lacks the classifier's weight.
    """
    _weight, bias = _classifier_grads(update, model, "count", need_bias=True)
    assert bias is not None  # need_bias refuses a bias-free classifier
    counts = counts_from_bias(bias, mean_softmax_estimate(model, knowledge), knowledge.batch_size)
    return torch.repeat_interleave(torch.arange(counts.numel(), device=counts.device), counts)


LABEL_STRATEGIES: dict[str, LabelStrategy] = {
    s.name: s
    for s in (
        LabelStrategy(
            "known",
            "labels granted by the threat model",
            frozenset({Requirement.LABELS}),
            _known,
            recovers=False,
        ),
        LabelStrategy(
            "analytic",
            "iDLG: read from the sign of the last layer's gradient (batch 1)",
            frozenset({Requirement.SINGLE_SAMPLE}),
            _analytic,
        ),
        LabelStrategy(
            "optimize",
            "DLG: soft labels optimised jointly with the images",
            frozenset(),
            _optimize,
            fixed=False,
        ),
        LabelStrategy(
            "sign",
            "classes with a negative last-layer bias gradient, cycled to fill the batch",
            frozenset(),
            sign_labels,
        ),
        LabelStrategy(
            "yin",
            "GradInversion: the B classes with the most negative last-layer weight rows",
            frozenset(),
            yin_labels,
        ),
        LabelStrategy(
            "count",
            "label counts from the bias gradient minus an estimated mean softmax",
            frozenset(),
            count_labels,
        ),
    )
}

AUTO = "auto"


def resolve_label_strategy(name: str, knowledge: Knowledge) -> LabelStrategy:
    """Pick the strategy; `auto` uses known labels, else iDLG for batch 1, else optimisation.

    Args:
        name: "auto" or a name of `LABEL_STRATEGIES` (known, analytic, optimize, sign,
            yin, count).
        knowledge: what the threat model grants; `auto` reads whether the labels are
            known and the batch size.

    Returns:
        The strategy. Its `requires` is not checked here: callers check it with
        `knowledge.require`.

    Raises:
        GradleakError: when `name` is neither "auto" nor a strategy's name.
    """
    if name == AUTO:
        if knowledge.labels_known:
            name = "known"
        elif knowledge.batch_size == 1:
            name = "analytic"
        else:
            name = "optimize"
    try:
        return LABEL_STRATEGIES[name]
    except KeyError:
        choices = ", ".join([AUTO, *LABEL_STRATEGIES])
        raise GradleakError(f"unknown label strategy {name!r}; choose one of: {choices}") from None
