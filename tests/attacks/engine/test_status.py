"""Each trial's verdict (ok, diverged, no progress) and the reconstruction's status: a failed
optimisation is never reported as a normal result, and a diverged trial never wins."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from gradleak.attacks.engine.adam import optimize_adam
from gradleak.attacks.engine.lbfgs import optimize_lbfgs
from gradleak.attacks.engine.status import TrialStatus, TrialWatch, run_status
from gradleak.attacks.engine.trials import TrialsResult, select
from gradleak.attacks.reconstruction import Status

from .problems import matching_problem

pytestmark = pytest.mark.usefixtures("one_thread")


# --- the verdict of one trial -----------------------------------------------------------------


def _watch(*losses: float) -> TrialWatch:
    watch = TrialWatch(1)
    for iteration, loss in enumerate(losses):
        watch.see(0, iteration, loss)
    return watch


@pytest.mark.parametrize(
    ("losses", "final", "moved", "finite", "status", "reason"),
    [
        ((5.0, 3.0, 1.0), 1.0, True, True, Status.OK, ""),
        # Blew up, then came back below the start (L-BFGS keeps its best iterate).
        ((5.0, 900.0, 2.0), 2.0, True, True, Status.OK, ""),
        ((5.0, 5.1, math.nan), 5.0, False, True, Status.DIVERGED, "loss NaN at iteration 2"),
        ((5.0, 400.0, 9.0), 5.0, False, True, Status.DIVERGED, "80× its start at iteration 1"),
        ((5.0, 4.0), 4.0, True, False, Status.DIVERGED, "the inputs became non-finite"),
        ((5.0, 4.0), math.inf, True, True, Status.DIVERGED, "final loss +inf"),
        ((5.0, 6.0), 6.0, True, True, Status.NO_PROGRESS, "not below its start 5"),
        ((5.0, 5.0), 5.0, False, True, Status.NO_PROGRESS, "never moved"),
        ((5.0,), 0.0, False, True, Status.OK, ""),  # at the tolerance: nothing left to do
        # An interrupt before the first evaluation: no loss at all, nothing diverged.
        ((), math.inf, False, True, Status.NO_PROGRESS, "never evaluated"),
    ],
    ids=[
        "improved",
        "recovered",
        "nan",
        "blew-up",
        "non-finite-inputs",
        "infinite",
        "worse",
        "never-moved",
        "exact",
        "never-evaluated",
    ],
)
def test_trial_verdicts(
    losses: tuple[float, ...],
    final: float,
    moved: bool,
    finite: bool,
    status: Status,
    reason: str,
) -> None:
    verdict = _watch(*losses).verdict(0, final, moved=moved, finite=finite)
    assert verdict.status is status
    assert reason in verdict.reason
    assert bool(verdict.reason) == (status is not Status.OK)
    assert "\n" not in verdict.reason


def test_a_run_interrupted_before_its_first_evaluation_is_interrupted_not_diverged() -> None:
    never = _watch().verdict(0, math.inf, moved=False, finite=True)
    assert run_status(never, interrupted=True, iterations=0).status is Status.INTERRUPTED


# --- selection over verdicts ------------------------------------------------------------------


def _result(distances: list[float], statuses: list[Status], interrupted: bool = False):
    k = len(distances)
    return TrialsResult(
        torch.zeros(k, 1, 3, 2, 2),
        torch.zeros(k, 1, dtype=torch.long),
        torch.tensor(distances),
        iterations=7,
        interrupted=interrupted,
        trial_iterations=[7] * k,
        distances=torch.tensor(distances),
        statuses=[TrialStatus(s, "" if s is Status.OK else "why") for s in statuses],
    )


def test_a_diverged_trial_never_wins_over_one_that_did_not_diverge() -> None:
    result = _result([0.1, 0.5, 0.3], [Status.DIVERGED, Status.OK, Status.NO_PROGRESS])
    chosen = select(result, range(3))
    assert chosen.best == 2  # the smallest distance among the trials that did not diverge
    assert chosen.status.status is Status.NO_PROGRESS
    assert chosen.distances == pytest.approx([0.1, 0.5, 0.3])


def test_when_every_trial_diverged_the_result_is_diverged() -> None:
    result = _result([0.4, 0.2], [Status.DIVERGED, Status.DIVERGED], interrupted=True)
    chosen = select(result, range(2))
    assert chosen.best == 1
    assert chosen.status == TrialStatus(Status.DIVERGED, "why")  # not hidden by Ctrl-C


def test_an_interrupted_run_is_interrupted_unless_it_diverged() -> None:
    result = _result([0.4, 0.2], [Status.OK, Status.OK], interrupted=True)
    status = select(result, range(2)).status
    assert status.status is Status.INTERRUPTED
    assert status.reason == "stopped by an interrupt after 7 iterations"
    assert run_status(TrialStatus(Status.OK), False, 3) == TrialStatus(Status.OK)


# --- the optimisers judge their trials ---------------------------------------------------------


def test_lbfgs_with_a_huge_fixed_step_is_diverged_and_returns_its_start(lenet_case: Any) -> None:
    case, target = lenet_case
    problem = matching_problem(case, target, "l2")
    g = torch.Generator().manual_seed(0)
    images, soft = torch.randn(1, 1, 3, 32, 32, generator=g), torch.randn(1, 1, 10, generator=g)

    # The reference's fixed step with an absurd length: the first step lands far away.
    result = optimize_lbfgs(
        problem, images, soft, lr=1e6, steps=20, inner_iterations=20, progress=False
    )

    assert result.statuses[0].status is Status.DIVERGED
    assert "iteration 1" in result.statuses[0].reason
    assert torch.equal(result.images, images)  # no attack result: the random start
    start = problem.loss_terms(images[0], soft[0])
    assert result.distances[0].item() == pytest.approx(float(start.distance))


def test_lbfgs_that_improves_is_ok(lenet_case: Any) -> None:
    case, target = lenet_case
    problem = matching_problem(case, target, "l2")
    g = torch.Generator().manual_seed(0)
    images, soft = torch.randn(1, 1, 3, 32, 32, generator=g), torch.randn(1, 1, 10, generator=g)

    result = optimize_lbfgs(
        problem,
        images,
        soft,
        steps=2,
        inner_iterations=3,
        line_search="strong_wolfe",
        progress=False,
    )

    assert result.statuses == [TrialStatus(Status.OK)]


def test_adam_diverged_trial_returns_its_start_and_never_wins(lenet_case: Any) -> None:
    case, target = lenet_case
    problem = matching_problem(case, target, "l2")
    truth = case.client.batch.images
    g = torch.Generator().manual_seed(3)
    near = truth + 0.01 * torch.randn(truth.shape, generator=g)
    starts = torch.stack([torch.randn(truth.shape, generator=g), near])
    labels = case.client.batch.labels
    # Trial 1 starts next to the truth (the smaller distance) but takes absurd steps.
    result = optimize_adam(
        problem,
        starts,
        labels,
        lr=[1e-3, 1e3],
        iterations=4,
        signed=False,
        lr_decay=False,
        log_every=1,
        progress=False,
    )

    assert result.statuses[0].status is Status.OK
    assert result.statuses[1].status is Status.DIVERGED
    assert "its start at iteration 1" in result.statuses[1].reason
    assert torch.equal(result.images[1], near)  # put back to its start
    start_distance = float(problem.loss_terms(near, labels).distance)
    assert result.distances[1].item() == pytest.approx(start_distance, rel=1e-5)
    assert result.distances[1] < result.distances[0]  # by distance alone it would win
    assert select(result, range(2)).best == 0
    assert result.history[-1]["trial"] == 0  # the observer's final row agrees


def test_adam_inputs_that_never_move_made_no_progress(lenet_case: Any) -> None:
    case, target = lenet_case
    problem = matching_problem(case, target, "cosine")
    images = torch.randn(2, 1, 3, 32, 32, generator=torch.Generator().manual_seed(4))

    result = optimize_adam(
        problem, images, case.client.batch.labels, lr=[0.0, 0.1], iterations=3, progress=False
    )

    assert result.statuses[0] == TrialStatus(
        Status.NO_PROGRESS, "the inputs never moved from their start"
    )
    assert result.statuses[1].status is Status.OK
    assert select(result, range(2)).status.status in (Status.OK, Status.NO_PROGRESS)


def test_adam_nan_start_is_diverged_at_iteration_0(lenet_case: Any) -> None:
    case, target = lenet_case
    problem = matching_problem(case, target, "cosine")
    images = torch.randn(2, 1, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    images[0] = torch.nan

    result = optimize_adam(
        problem, images, case.client.batch.labels, lr=0.1, iterations=2, progress=False
    )

    assert result.statuses[0] == TrialStatus(Status.DIVERGED, "loss NaN at iteration 0")
    assert select(result, range(2)).best == 1
