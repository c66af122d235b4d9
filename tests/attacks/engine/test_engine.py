"""The matching engine: K stacked Adam trials, the pixel box, history, Ctrl-C, L-BFGS."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch

from gradleak.attacks.engine import lbfgs
from gradleak.attacks.engine.adam import optimize_adam
from gradleak.attacks.engine.lbfgs import optimize_lbfgs
from gradleak.attacks.engine.trials import best_trial
from gradleak.attacks.matching.problem import label_loss
from gradleak.data import pixel_bounds
from gradleak.fl import FedSGDClient
from gradleak.scenario import RunConfig, build_case

from .problems import matching_problem

pytestmark = pytest.mark.usefixtures("one_thread")


def _start(k: int, seed: int = 1, classes: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(k, 1, 3, 32, 32, generator=g), torch.randn(k, 1, classes, generator=g)


# --- the matching problem ---------------------------------------------------------------------


def test_matching_loss_is_zero_at_the_true_batch(lenet_case: Any) -> None:
    case, target = lenet_case
    problem = matching_problem(case, target, "l2")
    grads = problem.candidate_gradient(case.client.batch.images, case.client.batch.labels)
    for name, tensor in target.items():
        torch.testing.assert_close(grads[name], tensor, rtol=1e-4, atol=1e-6)
    assert problem.loss(case.client.batch.images, case.client.batch.labels).item() < 1e-10
    wrong = (case.client.batch.labels + 1) % 10
    assert problem.loss(case.client.batch.images, wrong).item() > 1e-3


def test_soft_label_loss_matches_cross_entropy_for_one_hot_logits() -> None:
    logits = torch.randn(4, 10, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([1, 0, 9, 3])
    sharp = torch.nn.functional.one_hot(labels, 10).float() * 1e4
    torch.testing.assert_close(label_loss(logits, sharp), label_loss(logits, labels))


# --- Adam: K trials at once -------------------------------------------------------------------


@pytest.mark.parametrize("soft", [False, True], ids=["fixed-labels", "soft-labels"])
def test_stacked_trials_equal_trials_run_alone(lenet_case: Any, soft: bool) -> None:
    case, target = lenet_case
    problem = matching_problem(case, target, "cosine")
    images, soft_labels = _start(3)
    labels = soft_labels if soft else case.client.batch.labels
    options: dict[str, Any] = {
        "lr": 0.1,
        "iterations": 8,
        "signed": True,
        "bounds": pixel_bounds(case.server.knowledge.mean, case.server.knowledge.std),
        "lr_decay": True,
        "log_every": 2,
        "progress": False,
    }

    stacked = optimize_adam(problem, images, labels, **options)
    alone = [
        optimize_adam(problem, images[i : i + 1], labels[i : i + 1] if soft else labels, **options)
        for i in range(3)
    ]

    assert stacked.images.shape == images.shape
    assert stacked.labels.shape == (3, 1)
    for i, single in enumerate(alone):
        torch.testing.assert_close(stacked.images[i], single.images[0], rtol=0, atol=1e-5)
        torch.testing.assert_close(stacked.losses[i], single.losses[0], rtol=1e-5, atol=1e-6)
        assert stacked.labels[i].tolist() == single.labels[0].tolist()
    # The trials really are different problems (different starts, different answers).
    assert not torch.allclose(stacked.images[0], stacked.images[1])


def test_trial_does_not_depend_on_its_neighbours_with_batch_norm() -> None:
    # ResNet batch norm in train mode normalises with batch statistics: each trial must use
    # its own batch, never statistics pooled over the stacked trials.
    case = build_case(RunConfig(model="resnet20", batch_size=2, progress=False))
    update = FedSGDClient(case.server.model).compute_update(case.client.batch)
    problem = matching_problem(case, update.tensors, "cosine")
    g = torch.Generator().manual_seed(3)
    first = torch.randn(3, 2, 3, 32, 32, generator=g)
    second = first.clone()
    second[1:] = torch.randn(2, 2, 3, 32, 32, generator=g)
    options: dict[str, Any] = {"lr": 0.1, "iterations": 2, "log_every": 1, "progress": False}

    a = optimize_adam(problem, first, case.client.batch.labels, **options)
    b = optimize_adam(problem, second, case.client.batch.labels, **options)

    assert torch.equal(a.images[0], b.images[0])
    assert torch.equal(a.losses[0], b.losses[0])
    assert not torch.equal(a.images[1], b.images[1])


def test_signed_adam_with_box_stays_within_pixel_bounds(lenet_case: Any) -> None:
    case, target = lenet_case
    problem = matching_problem(case, target, "cosine")
    images, _ = _start(2)
    images = images * 3.0  # start well outside the box
    lower, upper = pixel_bounds(case.server.knowledge.mean, case.server.knowledge.std)
    options: dict[str, Any] = {"lr": 0.5, "iterations": 4, "signed": True, "progress": False}

    boxed = optimize_adam(
        problem, images, case.client.batch.labels, bounds=(lower, upper), **options
    )
    free = optimize_adam(problem, images, case.client.batch.labels, bounds=None, **options)

    assert (boxed.images >= lower).all()
    assert (boxed.images <= upper).all()
    # Boxing is what keeps them inside: without it, pixels leave the box.
    assert ((free.images < lower) | (free.images > upper)).any()


def test_adam_history_rows_and_result_fields(lenet_case: Any) -> None:
    case, target = lenet_case
    problem = matching_problem(case, target, "cosine")
    images, _ = _start(2)
    seen: list[tuple[int, tuple[int, ...], tuple[int, ...]]] = []

    def observer(iteration: int, losses: torch.Tensor, trials: torch.Tensor) -> dict[str, float]:
        seen.append((iteration, tuple(losses.shape), tuple(trials.shape)))
        return {"extra": float(iteration) * 2}

    result = optimize_adam(
        problem,
        images,
        case.client.batch.labels,
        lr=0.1,
        iterations=10,
        log_every=4,
        observer=observer,
        progress=False,
    )

    assert [row["iteration"] for row in result.history] == [0, 4, 8, 10]
    for row in result.history:
        assert {"iteration", "trial", "loss", "extra"} <= set(row)
        assert math.isfinite(row["loss"])
        assert row["extra"] == row["iteration"] * 2
    assert seen == [(i, (2,), (2, 1, 3, 32, 32)) for i in (0, 4, 8, 10)]
    assert result.iterations == 10
    assert result.loss_evaluations == 10 * 2 + 2
    assert not result.interrupted
    # The last row reports the final loss of the best trial, which the result's losses hold.
    assert result.history[-1]["loss"] == pytest.approx(float(result.losses.min()))
    assert best_trial(result.losses) == int(result.losses.argmin())
    recomputed = problem.loss(result.images[best_trial(result.losses)], case.client.batch.labels)
    assert recomputed.item() == pytest.approx(
        float(result.losses[best_trial(result.losses)]), rel=1e-5
    )


def test_adam_lowers_the_matching_loss(lenet_case: Any) -> None:
    case, target = lenet_case
    problem = matching_problem(case, target, "cosine")
    images, _ = _start(2)
    result = optimize_adam(
        problem, images, case.client.batch.labels, lr=0.1, iterations=20, progress=False
    )
    start = [problem.loss(images[i], case.client.batch.labels).item() for i in range(2)]
    for i in range(2):
        assert result.losses[i].item() < start[i]


def _interrupt_once_at(at: int) -> tuple[Callable[..., None], list[int]]:
    """An observer that behaves like one Ctrl-C arriving at the first log step ≥ `at`."""
    calls: list[int] = []
    fired = False

    def observer(iteration: int, losses: torch.Tensor, images: torch.Tensor) -> None:
        nonlocal fired
        calls.append(iteration)
        if iteration >= at and not fired:
            fired = True
            raise KeyboardInterrupt

    return observer, calls


def test_adam_keyboard_interrupt_returns_partial_result(lenet_case: Any) -> None:
    case, target = lenet_case
    problem = matching_problem(case, target, "cosine")
    images, _ = _start(2)
    observer, calls = _interrupt_once_at(5)

    result = optimize_adam(
        problem,
        images,
        case.client.batch.labels,
        lr=0.1,
        iterations=50,
        log_every=1,
        observer=observer,
        progress=False,
    )

    assert result.interrupted
    assert result.iterations == 5  # iterations 0..4 completed, interrupted before step 5
    assert result.images.shape == images.shape
    assert torch.isfinite(result.images).all()
    assert torch.isfinite(result.losses).all()
    assert result.history[-1]["iteration"] == 5
    assert calls == [0, 1, 2, 3, 4, 5, 5]  # the interrupted call, then the final record


def test_lbfgs_keyboard_interrupt_returns_partial_result(lenet_case: Any) -> None:
    case, target = lenet_case
    problem = matching_problem(case, target, "l2")
    images, soft = _start(2)
    observer, _ = _interrupt_once_at(3)

    result = optimize_lbfgs(
        problem,
        images,
        soft,
        steps=50,
        inner_iterations=2,
        log_every=1,
        observer=observer,
        progress=False,
    )

    assert result.interrupted
    assert result.iterations < 50
    # The interrupt stops every stacked trial; each returns its best iterate so far.
    assert result.images.shape == (2, 1, 3, 32, 32)
    assert torch.isfinite(result.losses).all()
    for i in range(2):
        recomputed = problem.loss(result.images[i], soft[i]).item()
        assert recomputed < problem.loss(images[i], soft[i]).item()


# --- L-BFGS -----------------------------------------------------------------------------------


def test_lbfgs_lowers_the_loss(lenet_case: Any) -> None:
    case, target = lenet_case
    problem = matching_problem(case, target, "l2")
    images, soft = _start(2)
    start = [problem.loss(images[i], soft[i]).item() for i in range(2)]

    result = optimize_lbfgs(
        problem,
        images,
        soft,
        lr=1.0,
        steps=3,
        inner_iterations=5,
        line_search="strong_wolfe",
        log_every=1,
        progress=False,
    )

    assert result.images.shape == images.shape
    assert result.labels.shape == (2, 1)
    assert result.labels.dtype == torch.long
    for i in range(2):
        assert result.losses[i].item() < 0.5 * start[i]
    trials = {row["trial"] for row in result.history}
    assert trials == {0, 1}
    losses_of_first = [row["loss"] for row in result.history if row["trial"] == 0]
    assert losses_of_first == sorted(losses_of_first, reverse=True)  # best-so-far never rises
    # One row per step and trial, the last step not repeated.
    steps_of_first = [row["iteration"] for row in result.history if row["trial"] == 0]
    assert steps_of_first == list(range(1, result.iterations + 1))


def test_lbfgs_keeps_the_best_iterate(lenet_case: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    case, target = lenet_case
    problem = matching_problem(case, target, "l2")
    images, _ = _start(1)
    labels = case.client.batch.labels
    evaluated: list[float] = []
    original = lbfgs.TrialStep.__call__

    def recording(self: Any, images: torch.Tensor, inputs: Any) -> Any:
        out = original(self, images, inputs)
        evaluated.extend(out[2].tolist())
        return out

    monkeypatch.setattr(lbfgs.TrialStep, "__call__", recording)
    # A huge fixed step (no line search) makes L-BFGS overshoot: later iterates are worse.
    result = optimize_lbfgs(
        problem,
        images,
        labels,
        lr=100.0,
        steps=3,
        inner_iterations=5,
        line_search=None,
        log_every=1,
        progress=False,
    )

    finite = [v for v in evaluated if math.isfinite(v)]
    assert len(evaluated) >= 3
    assert not evaluated[-1] <= min(finite)  # precondition: the last iterate is not the best
    assert result.losses[0].item() == pytest.approx(min(finite))
    assert result.loss_evaluations == len(evaluated)
    # The returned images are the ones that scored that loss.
    recomputed = problem.loss(result.images[0], labels).item()
    assert recomputed == pytest.approx(min(finite), rel=1e-5)
