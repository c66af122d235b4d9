"""The hook contract after StopAttack (the observer is not called again) and L-BFGS with one
row of integer labels per trial."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from gradleak.attacks.engine.adam import optimize_adam
from gradleak.attacks.engine.hooks import StopAttack
from gradleak.attacks.engine.lbfgs import optimize_lbfgs
from gradleak.scenario import RunConfig, build_case

from .problems import matching_problem

pytestmark = pytest.mark.usefixtures("one_thread")


def _stopping_at(stop: int):
    calls: list[int] = []

    def observer(iteration: int, losses: torch.Tensor, images: torch.Tensor) -> dict[str, float]:
        calls.append(iteration)
        if iteration >= stop:
            raise StopAttack("target reached", {"psnr": 99.0})
        return {"psnr": 1.0}

    return observer, calls


def test_adam_does_not_call_the_observer_after_it_stopped_the_run(lenet_case: Any) -> None:
    case, target = lenet_case
    problem = matching_problem(case, target, "cosine")
    images = torch.randn(2, 1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    observer, calls = _stopping_at(2)

    result = optimize_adam(
        problem,
        images,
        case.client.batch.labels,
        lr=0.1,
        iterations=10,
        log_every=1,
        observer=observer,
        progress=False,
    )

    assert calls == [0, 1, 2]
    assert result.stopped and result.iterations == 2
    # The row of the stopping call keeps the columns the observer computed; no row repeats it.
    assert [row["iteration"] for row in result.history] == [0, 1, 2]
    assert result.history[-1]["psnr"] == 99.0


def test_lbfgs_does_not_call_the_observer_after_it_stopped_the_run(lenet_case: Any) -> None:
    case, target = lenet_case
    problem = matching_problem(case, target, "l2")
    images = torch.randn(2, 1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    observer, calls = _stopping_at(2)

    result = optimize_lbfgs(
        problem,
        images,
        case.client.batch.labels,
        steps=10,
        inner_iterations=2,
        log_every=1,
        observer=observer,
        progress=False,
    )

    # Stacked trials end their outer steps in turn: trial 0's step 1, trial 1's step 1,
    # trial 0's step 2 stops every trial.
    assert calls == [1, 1, 2]
    assert result.stopped and result.images.shape[0] == 2
    rows = [(row["trial"], row["iteration"]) for row in result.history]
    assert rows[:3] == [(0, 1), (1, 1), (0, 2)]
    assert result.history[2]["psnr"] == 99.0
    # Trial 1's last row, if it went on, is recorded without calling the observer again.
    assert all("psnr" not in row for row in result.history[3:])


def test_lbfgs_takes_one_row_of_integer_labels_per_trial(one_thread: None) -> None:
    from gradleak.fl import FedSGDClient

    case = build_case(RunConfig(model="lenet", indices=(0, 1), batch_size=2, progress=False))
    target = dict(FedSGDClient(case.server.model).compute_update(case.client.batch).tensors)
    problem = matching_problem(case, target, "l2")
    true = case.client.batch.labels
    labels = torch.stack([true, true.flip(0)])  # K×B: each trial with its own labels
    images = torch.randn(2, 2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    options: dict[str, Any] = {"steps": 2, "inner_iterations": 2, "progress": False}

    result = optimize_lbfgs(problem, images, labels, **options)

    assert result.labels.shape == (2, 2)
    assert torch.equal(result.labels, labels)
    for k in range(2):
        alone = optimize_lbfgs(problem, images[k : k + 1], labels[k], **options)
        # Stacked trials run the vmapped step, a trial alone autograd's: equal up to rounding.
        torch.testing.assert_close(result.images[k], alone.images[0], rtol=1e-4, atol=1e-5)
        assert result.losses[k].item() == pytest.approx(alone.losses[0].item(), rel=1e-4)
