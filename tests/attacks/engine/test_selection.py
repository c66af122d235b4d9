"""Restart selection ranks trials by the gradient-matching distance alone (Inverting
Gradients), not by the optimised loss with its prior, for every optimiser."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from gradleak import attacks
from gradleak.attacks.engine.adam import optimize_adam
from gradleak.attacks.engine.lbfgs import optimize_lbfgs
from gradleak.attacks.engine.trials import best_trial, select
from gradleak.attacks.gradient_matching import GradientMatchingAttack
from gradleak.fl import FedSGDClient
from gradleak.scenario import RunConfig, build_case

from .problems import matching_problem

pytestmark = pytest.mark.usefixtures("one_thread")

# Inverting Gradients' weight for images of 64 pixels a side and more.
LARGE_TV = 0.1


@pytest.fixture(scope="module")
def two_starts(lenet_case: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Two trials where the prior and the distance disagree, and the true labels.

    Trial 0 is a constant grey image: no total variation, a poor gradient match. Trial 1 is
    the private image under heavy noise: a much closer gradient match, but so rough that
    with the large TV weight its loss is the higher one.
    """
    case, target = lenet_case
    truth = case.client.batch.images
    noise = 0.5 * torch.randn(truth.shape, generator=torch.Generator().manual_seed(0))
    starts = torch.stack([torch.zeros_like(truth), truth + noise])
    problem = matching_problem(case, target, "cosine", tv=LARGE_TV)
    terms = [problem.loss_terms(x, case.client.batch.labels) for x in starts]
    # The construction: the prior would pick trial 0, the distance picks trial 1.
    assert terms[0].loss < terms[1].loss
    assert terms[1].distance < 0.7 * terms[0].distance
    return starts, case.client.batch.labels


def _check_selection(result: Any, problem: Any, labels: torch.Tensor) -> None:
    assert best_trial(result.losses) == 0  # what ranking by the optimised loss would keep
    chosen = select(result, range(2))
    assert chosen.best == 1
    # The distances are those of each trial's returned inputs, without the prior.
    for k in range(2):
        expected = problem.loss_terms(result.images[k], labels).distance
        assert chosen.distances[k] == pytest.approx(float(expected), rel=1e-4)
    assert chosen.distances[1] < float(result.losses[1])  # its prior is left out


def test_adam_keeps_the_trial_with_the_smallest_distance(lenet_case: Any, two_starts: Any) -> None:
    case, target = lenet_case
    starts, labels = two_starts
    problem = matching_problem(case, target, "cosine", tv=LARGE_TV)
    seen: list[int] = []

    def observer(iteration: int, distances: torch.Tensor, images: torch.Tensor) -> None:
        seen.append(best_trial(distances))

    result = optimize_adam(
        problem,
        starts,
        labels,
        lr=1e-4,
        iterations=2,
        log_every=1,
        observer=observer,
        progress=False,
    )

    _check_selection(result, problem, labels)
    # The observer (the evaluation side) scores the same trial selection keeps.
    assert seen[-1] == 1
    assert result.history[-1]["trial"] == 1
    assert result.history[-1]["distance"] == pytest.approx(float(result.distances[1]))


def test_lbfgs_keeps_the_trial_with_the_smallest_distance(lenet_case: Any, two_starts: Any) -> None:
    case, target = lenet_case
    starts, labels = two_starts
    problem = matching_problem(case, target, "cosine", tv=LARGE_TV)

    result = optimize_lbfgs(
        problem, starts, labels, lr=1e-6, steps=2, inner_iterations=2, progress=False
    )

    _check_selection(result, problem, labels)


def test_the_attack_returns_the_trial_with_the_smallest_distance(
    two_starts: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    starts, labels = two_starts
    case = build_case(RunConfig(model="lenet", indices=(0,), labels_known=True, progress=False))
    update = FedSGDClient(case.server.model).compute_update(case.client.batch)
    monkeypatch.setattr(
        GradientMatchingAttack, "_start", lambda self, knowledge, fixed, seed: (starts, fixed)
    )
    attack = attacks.get("ig").with_options(
        {"restarts": 2, "iterations": 2, "lr": 1e-4, "tv_weight": LARGE_TV}
    )

    rec = attack.reconstruct(update, case.server.model, case.server.knowledge, progress=False)

    assert rec.best_trial == 1
    assert rec.trial_losses[1] < rec.trial_losses[0]
    assert rec.loss == rec.trial_losses[1]
    problem = matching_problem(case, dict(update.tensors), "cosine", tv=LARGE_TV)
    distance = problem.loss_terms(rec.images, labels).distance
    assert rec.loss == pytest.approx(float(distance), rel=1e-4)
