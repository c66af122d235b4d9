"""Distances between a candidate's gradient and the shared one, over named tensors."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from gradleak.core.errors import GradleakError

Gradients = Mapping[str, torch.Tensor]
Objective = Callable[[Gradients, Gradients], torch.Tensor]


def l2_distance(candidate: Gradients, target: Gradients) -> torch.Tensor:
    """Sum of squared differences over every tensor (DLG).

    Args:
        candidate: the candidate's update by parameter name (every name of `target`).
        target: the shared update by parameter name.

    Returns:
        A scalar: Σ over the names of `target` of ‖candidate − target‖², summed (not
        averaged) over every entry; 0 exactly when they agree.
    """
    return sum((candidate[n] - target[n]).pow(2).sum() for n in target)


def cosine_distance(candidate: Gradients, target: Gradients) -> torch.Tensor:
    """1 − cosine similarity of all tensors taken as one vector (Inverting Gradients).

    Blind to scale: a candidate that is a positive multiple of the target scores 0, a
    negative multiple 2.

    Args:
        candidate: the candidate's update by parameter name (every name of `target`).
        target: the shared update by parameter name.

    Returns:
        A scalar in [0, 2]: 1 − ⟨c, t⟩ / (‖c‖ ‖t‖ + 1e-12) over all names of `target`
        flattened into one vector; an all-zero candidate or target scores 1.
    """
    dot = sum((candidate[n] * target[n]).sum() for n in target)
    candidate_sq = sum(candidate[n].pow(2).sum() for n in target)
    target_sq = sum(target[n].pow(2).sum() for n in target)
    # Clamping before the root keeps an all-zero candidate (a saturated start) differentiable.
    return 1.0 - dot / (candidate_sq.clamp_min(1e-24).sqrt() * target_sq.sqrt() + 1e-12)


# TAG (Deng et al. 2021, "TAG: Gradient Attack on Transformer-based Language Models", EMNLP
# Findings) adds an L1 term to DLG's squared L2, so that the many small gradients of a
# transformer's layers weigh more than squares let them. The paper makes the weight α depend
# on the layer but gives no schedule we could find; LAMP's reproduction of TAG (Balunović et
# al. 2022, github.com/eth-sri/lamp: tag.sh passes --tag_factor 0.01 and utilities.py
# grad_dist adds α·L1 to L2 for every tensor alike) uses one α = 0.01, as this default does.
TAG_ALPHA = 0.01


def tag_distance(candidate: Gradients, target: Gradients, alpha: float = TAG_ALPHA) -> torch.Tensor:
    """Squared L2 plus α times L1 over every tensor (TAG).

    Args:
        candidate: the candidate's update by parameter name (every name of `target`).
        target: the shared update by parameter name.
        alpha: the L1 term's weight, the same for every tensor (default `TAG_ALPHA`).

    Returns:
        A scalar: Σ over the names of `target` of ‖candidate − target‖² + α‖candidate −
        target‖₁; 0 exactly when they agree.
    """
    differences = (candidate[n] - target[n] for n in target)
    return sum(d.pow(2).sum() + alpha * d.abs().sum() for d in differences)


OBJECTIVES: dict[str, Objective] = {
    "l2": l2_distance,
    "cosine": cosine_distance,
    "tag": tag_distance,
}


def get_objective(name: str) -> Objective:
    """The distance called `name`.

    Args:
        name: "l2" (`l2_distance`), "cosine" (`cosine_distance`) or "tag"
            (`tag_distance`, α = `TAG_ALPHA`).

    Returns:
        The distance, a function (candidate, target) → scalar tensor.

    Raises:
        GradleakError: when no objective has that name (the message lists the choices).
    """
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise GradleakError(
            f"unknown objective {name!r}; choose one of: {', '.join(OBJECTIVES)}"
        ) from None
