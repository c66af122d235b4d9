"""Distances between a candidate's gradient and the shared one, over named tensors."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from gradleak.core.errors import GradleakError

Gradients = Mapping[str, torch.Tensor]
Objective = Callable[[Gradients, Gradients], torch.Tensor]


def l2_distance(candidate: Gradients, target: Gradients) -> torch.Tensor:
    """Sum of squared differences over every tensor (DLG)."""
    return sum((candidate[n] - target[n]).pow(2).sum() for n in target)


def cosine_distance(candidate: Gradients, target: Gradients) -> torch.Tensor:
    """1 − cosine similarity of all tensors taken as one vector (Inverting Gradients)."""
    dot = sum((candidate[n] * target[n]).sum() for n in target)
    candidate_sq = sum(candidate[n].pow(2).sum() for n in target)
    target_sq = sum(target[n].pow(2).sum() for n in target)
    # Clamping before the root keeps an all-zero candidate (a saturated start) differentiable.
    return 1.0 - dot / (candidate_sq.clamp_min(1e-24).sqrt() * target_sq.sqrt() + 1e-12)


OBJECTIVES: dict[str, Objective] = {"l2": l2_distance, "cosine": cosine_distance}


def get_objective(name: str) -> Objective:
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise GradleakError(
            f"unknown objective {name!r}; choose one of: {', '.join(OBJECTIVES)}"
        ) from None
