"""The matching problem the engine tests optimise: LeNet-style models, the image prior."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from gradleak.attacks.matching.objectives import get_objective
from gradleak.attacks.matching.problem import MatchingProblem, attacker_model
from gradleak.modalities.image import total_variation
from gradleak.scenario.case import Case


def matching_problem(
    case: Case, target: Mapping[str, torch.Tensor], objective: str, tv: float | None = None
) -> MatchingProblem:
    """The problem of matching `target` on the case's model in train mode.

    `tv` None: Inverting Gradients' 1e-4 for the cosine distance, none for L2.
    """
    if tv is None:
        tv = 1e-4 if objective == "cosine" else 0.0
    return MatchingProblem(
        attacker_model(case.server.model, "train"),
        target,
        get_objective(objective),
        tv,
        prior=total_variation,
    )
