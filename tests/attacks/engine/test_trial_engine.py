"""The rewritten trial engine against ground truth: autograd vs torch.func, stacked vs alone,
BatchedAdam vs torch.optim.Adam, early stopping, torch.compile and the memory check."""

from __future__ import annotations

import shutil
from typing import Any

import pytest
import torch
from torch.func import grad_and_value

import gradleak.attacks.engine.memory as memory
import gradleak.attacks.engine.step as trial_step
from gradleak.attacks.engine.adam import BatchedAdam, optimize_adam
from gradleak.attacks.engine.lbfgs import optimize_lbfgs
from gradleak.attacks.engine.memory import ensure_trials_fit, step_bytes
from gradleak.attacks.engine.trials import best_trial, trial_inputs
from gradleak.attacks.matching.problem import MatchingProblem
from gradleak.core.batch import PrivateBatch
from gradleak.core.errors import GradleakError
from gradleak.data import pixel_bounds
from gradleak.fl import FedSGDClient
from gradleak.scenario import RunConfig, build_case
from gradleak.scenario.case import Case

from .problems import matching_problem

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def three_images(one_thread: None) -> tuple[Case, list[dict[str, torch.Tensor]]]:
    """Three private images and the true gradient each one alone shares."""
    case = build_case(RunConfig(model="lenet", indices=(0, 1, 2), batch_size=3, progress=False))
    client = FedSGDClient(case.server.model)
    updates = [
        dict(
            client.compute_update(
                PrivateBatch(
                    case.client.batch.images[i : i + 1], case.client.batch.labels[i : i + 1]
                )
            ).tensors
        )
        for i in range(3)
    ]
    return case, updates


def _start(k: int, seed: int = 1, batch: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(k, batch, 3, 32, 32, generator=g)


# --- 1. autograd value_and_grad == torch.func grad_and_value ---------------------------------


@pytest.fixture(scope="module")
def resnet20_case(one_thread: None) -> tuple[Case, dict[str, torch.Tensor]]:
    case = build_case(RunConfig(model="resnet20", batch_size=2, progress=False))
    update = FedSGDClient(case.server.model).compute_update(case.client.batch)
    return case, dict(update.tensors)


@pytest.mark.parametrize("soft", [False, True], ids=["int-labels", "soft-labels"])
@pytest.mark.parametrize("model", ["lenet", "resnet20"])
@pytest.mark.parametrize("objective", ["cosine", "l2"])
def test_value_and_grad_equals_functional_grad(
    request: pytest.FixtureRequest, model: str, soft: bool, objective: str
) -> None:
    case, target = request.getfixturevalue(f"{model}_case")
    problem = matching_problem(case, target, objective, tv=0.05)
    batch = case.client.batch.images.shape[0]
    g = torch.Generator().manual_seed(7)
    images = torch.randn(batch, 3, 32, 32, generator=g)
    labels = torch.randn(batch, 10, generator=g) if soft else case.client.batch.labels
    tv = torch.tensor(0.03)  # a per-call TV weight, as TrialStep passes it
    if model == "resnet20":
        assert any(isinstance(m, torch.nn.BatchNorm2d) for m in problem.model.modules())
        assert problem.model.training

    grads, value = problem.value_and_grad(images, labels, target, tv, soft=soft)
    argnums = (0, 1) if soft else 0
    expected_grads, expected_value = grad_and_value(problem.loss, argnums=argnums)(
        images, labels, target, tv
    )
    expected = expected_grads if soft else (expected_grads,)

    assert len(grads) == len(expected)
    torch.testing.assert_close(value, expected_value, rtol=1e-5, atol=1e-7)
    for got, want in zip(grads, expected, strict=True):
        assert got.shape == want.shape
        assert want.abs().max() > 0  # a real gradient, not two zeros that agree
        scale = float(want.abs().max())
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * scale)
    # The default target and TV weight are the problem's own.
    _, default_value = problem.value_and_grad(images, labels, soft=soft)
    torch.testing.assert_close(default_value, problem.loss(images, labels), rtol=1e-5, atol=1e-7)
    # Nothing leaked into the replica's parameters or the inputs.
    assert all(p.grad is None for p in problem.model.parameters())
    assert not images.requires_grad and not labels.requires_grad


# --- 2. stacked trials == each trial alone ----------------------------------------------------


def test_stacked_independent_trials_equal_trials_run_alone(three_images: Any) -> None:
    case, updates = three_images
    targets = {n: torch.stack([u[n] for u in updates]) for n in updates[0]}
    labels = case.client.batch.labels.reshape(3, 1)  # K×B: each trial attacks its own image
    # The problem's own target is image 0's; `targets` must override it per trial.
    problem = matching_problem(case, updates[0], "cosine")
    images = _start(3, seed=4)
    lrs, budgets, tvs = [0.1, 0.05, 0.2], [6, 10, 8], [1e-4, 0.0, 1e-2]
    options: dict[str, Any] = {
        "signed": True,
        "bounds": pixel_bounds(case.server.knowledge.mean, case.server.knowledge.std),
        "log_every": 3,
        "progress": False,
    }

    stacked = optimize_adam(
        problem,
        images,
        labels,
        lr=lrs,
        iterations=budgets,
        tv_weights=tvs,
        targets=targets,
        **options,
    )

    assert stacked.trial_iterations == budgets
    assert stacked.iterations == max(budgets)
    assert stacked.labels.tolist() == labels.tolist()
    for i in range(3):
        # Alone, through a one-trial stack of targets ...
        alone = optimize_adam(
            problem,
            images[i : i + 1],
            labels[i : i + 1],
            lr=[lrs[i]],
            iterations=[budgets[i]],
            tv_weights=[tvs[i]],
            targets={n: t[i : i + 1] for n, t in targets.items()},
            **options,
        )
        # ... and through a problem built for that image alone (shared labels B).
        own = optimize_adam(
            matching_problem(case, updates[i], "cosine", tv=tvs[i]),
            images[i : i + 1],
            labels[i],
            lr=lrs[i],
            iterations=budgets[i],
            **options,
        )
        for single in (alone, own):
            assert single.trial_iterations == [budgets[i]]
            torch.testing.assert_close(stacked.images[i], single.images[0], rtol=0, atol=1e-4)
            torch.testing.assert_close(stacked.losses[i], single.losses[0], rtol=1e-4, atol=1e-6)
        # The reported loss is the trial's own loss on its own target.
        truth = matching_problem(case, updates[i], "cosine", tv=tvs[i]).loss(
            stacked.images[i], labels[i]
        )
        torch.testing.assert_close(stacked.losses[i], truth, rtol=1e-5, atol=1e-6)
        assert not torch.equal(stacked.images[i], images[i])
    # Different targets: matching trial 0's images against image 1's update scores worse.
    cross = matching_problem(case, updates[1], "cosine", tv=tvs[0]).loss(
        stacked.images[0], labels[1]
    )
    assert cross.item() != pytest.approx(stacked.losses[0].item(), rel=1e-3)


# --- 3. BatchedAdam == torch.optim.Adam + MultiStepLR ----------------------------------------


def _quadratic_grad(p: torch.Tensor, scale: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """Gradient of sum(scale · (p − centre)²)."""
    return 2 * scale * (p - centre)


def _reference_adam(start: torch.Tensor, lr: float, n: int, scale, centre) -> list[torch.Tensor]:
    p = start.clone().requires_grad_(True)
    opt = torch.optim.Adam([p], lr=lr)
    milestones = [int(n * 3 / 8), int(n * 5 / 8), int(n * 7 / 8)]
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)
    out = []
    for _ in range(n):
        opt.zero_grad()
        (scale * (p - centre).pow(2)).sum().backward()
        opt.step()
        sched.step()
        out.append(p.detach().clone())
    return out


def test_batched_adam_one_trial_matches_torch_adam_with_multistep_decay() -> None:
    g = torch.Generator().manual_seed(0)
    # Double precision: the two implementations round differently in float32.
    start = torch.randn(1, 6, generator=g, dtype=torch.float64)
    scale = torch.rand(6, generator=g, dtype=torch.float64) * 3 + 0.1
    centre = torch.randn(6, generator=g, dtype=torch.float64)
    n = 16
    reference = _reference_adam(start[0], 0.3, n, scale, centre)

    param = start.clone()
    adam = BatchedAdam(param, [0.3], [n], lr_decay=True)
    for s in range(n):
        adam.step(_quadratic_grad(param, scale, centre))
        torch.testing.assert_close(param[0], reference[s], rtol=1e-10, atol=1e-12)
    assert adam.steps == [n]
    # Without the decay the path differs: the schedule is really applied.
    plain = start.clone()
    undecayed = BatchedAdam(plain, [0.3], [n], lr_decay=False)
    for _ in range(n):
        undecayed.step(_quadratic_grad(plain, scale, centre))
    assert not torch.allclose(plain, param, atol=1e-4)


def test_batched_adam_rows_have_own_schedule_and_rows_not_stepped_stay() -> None:
    g = torch.Generator().manual_seed(1)
    start = torch.randn(3, 2, 4, generator=g, dtype=torch.float64)  # K=3 trials of 2×4
    scale = torch.rand(2, 4, generator=g, dtype=torch.float64) + 0.5
    centre = torch.randn(2, 4, generator=g, dtype=torch.float64)
    lrs, budgets = [0.1, 0.3, 0.05], [16, 8, 12]
    references = [_reference_adam(start[k], lrs[k], budgets[k], scale, centre) for k in range(3)]

    param = start.clone()
    adam = BatchedAdam(param, lrs, budgets)
    for s in range(max(budgets)):
        index = [k for k in range(3) if s < budgets[k]]
        before = param.clone(), adam.exp_avg.clone(), adam.exp_avg_sq.clone(), list(adam.steps)
        rows = torch.tensor(index)
        grad = _quadratic_grad(param[rows], scale, centre)
        adam.step(grad, None if len(index) == 3 else index)
        for k in range(3):
            if k in index:
                torch.testing.assert_close(param[k], references[k][s], rtol=1e-10, atol=1e-12)
            else:  # not given: parameters, moments and step count untouched
                assert torch.equal(param[k], before[0][k])
                assert torch.equal(adam.exp_avg[k], before[1][k])
                assert torch.equal(adam.exp_avg_sq[k], before[2][k])
                assert adam.steps[k] == before[3][k]
    assert adam.steps == budgets
    for k in range(3):
        torch.testing.assert_close(param[k], references[k][-1], rtol=1e-10, atol=1e-12)


def test_batched_adam_middle_row_skipped() -> None:
    param = torch.zeros(3, 5)
    adam = BatchedAdam(param, [0.1, 0.1, 0.1], [10, 10, 10])
    adam.step(torch.ones(2, 5), [0, 2])
    assert adam.steps == [1, 0, 1]
    assert torch.equal(param[1], torch.zeros(5))
    assert torch.equal(adam.exp_avg[1], torch.zeros(5))
    torch.testing.assert_close(param[0], torch.full((5,), -0.1))
    torch.testing.assert_close(param[2], torch.full((5,), -0.1))
    # Row 1's first step later is a first Adam step (bias correction of step 1).
    adam.step(torch.full((1, 5), -2.0), [1])
    torch.testing.assert_close(param[1], torch.full((5,), 0.1))
    assert adam.steps == [1, 1, 1]


# --- 4. early stopping ------------------------------------------------------------------------


def test_trial_at_tolerance_stops_and_keeps_its_images(lenet_case: Any) -> None:
    case, target = lenet_case
    problem = matching_problem(case, target, "l2")
    g = torch.Generator().manual_seed(2)
    near = case.client.batch.images + 0.05 * torch.randn(
        case.client.batch.images.shape, generator=g
    )
    images = torch.stack([near, _start(1, seed=5)[0]])
    labels = case.client.batch.labels
    options: dict[str, Any] = {"lr": 0.01, "iterations": 9, "log_every": 3, "progress": False}
    seen: dict[int, torch.Tensor] = {}
    seen_losses: dict[int, list[float]] = {}

    def observer(iteration: int, losses: torch.Tensor, trials: torch.Tensor) -> None:
        seen[iteration] = trials.clone()
        seen_losses[iteration] = losses.tolist()

    free = optimize_adam(problem, images, labels, observer=observer, **options)
    first, later = seen_losses[0][0], seen_losses[3][0]
    # Preconditions (measured, not assumed): trial 0 improves by the check at iteration 3,
    # and trial 1 stays far above it all along.
    assert later < first
    assert min(min(v[1] for v in seen_losses.values()), float(free.losses[1])) > first
    tolerance = (first + later) / 2

    stopped = optimize_adam(problem, images, labels, tolerance=tolerance, **options)

    assert stopped.trial_iterations == [3, 9]
    assert stopped.iterations == 9
    # Trial 0 stopped at the check of iteration 3: its images are those after 3 steps.
    assert torch.equal(stopped.images[0], seen[3][0])
    assert stopped.losses[0].item() <= tolerance
    # Trial 1 ran its full budget, as it does without early stopping.
    torch.testing.assert_close(stopped.images[1], free.images[1], rtol=0, atol=1e-5)


def test_trial_starting_at_the_truth_stops_at_the_first_check(lenet_case: Any) -> None:
    case, target = lenet_case
    problem = matching_problem(case, target, "l2")
    images = torch.stack([case.client.batch.images, _start(1, seed=5)[0]])
    result = optimize_adam(
        problem,
        images,
        case.client.batch.labels,
        lr=0.1,
        iterations=6,
        log_every=2,
        tolerance=1e-8,
        progress=False,
    )
    assert result.trial_iterations == [0, 6]
    assert torch.equal(result.images[0], images[0])
    assert result.losses[0].item() <= 1e-8
    assert best_trial(result.losses) == 0


def test_non_finite_trial_stops_and_never_wins(lenet_case: Any) -> None:
    case, target = lenet_case
    problem = matching_problem(case, target, "cosine")
    images = _start(3, seed=6)
    images[1] = torch.nan
    options: dict[str, Any] = {"lr": 0.1, "iterations": 6, "log_every": 2, "progress": False}

    result = optimize_adam(problem, images, case.client.batch.labels, **options)

    assert result.trial_iterations == [6, 0, 6]
    assert not torch.isfinite(result.losses[1])
    assert torch.isfinite(result.losses[[0, 2]]).all()
    assert best_trial(result.losses) in (0, 2)
    assert best_trial(result.losses) == int(result.losses[[0, 2]].argmin()) * 2
    # The diverged trial does not disturb the others.
    alone = optimize_adam(problem, images[[0, 2]], case.client.batch.labels, **options)
    torch.testing.assert_close(result.images[[0, 2]], alone.images, rtol=0, atol=1e-5)


@pytest.mark.parametrize("case_", ["two-nan-trials", "one-trial-at-the-truth"])
def test_every_trial_stopping_at_the_same_check_ends_the_run(lenet_case: Any, case_: str) -> None:
    case, target = lenet_case
    problem = matching_problem(case, target, "l2")
    if case_ == "two-nan-trials":
        images = torch.full((2, 1, 3, 32, 32), torch.nan)
    else:  # a single trial whose loss is already within the tolerance
        images = case.client.batch.images.unsqueeze(0)

    result = optimize_adam(
        problem,
        images,
        case.client.batch.labels,
        lr=0.1,
        iterations=4,
        log_every=2,
        tolerance=1e-8,
        progress=False,
    )

    assert result.trial_iterations == [0] * images.shape[0]
    assert result.iterations == 0
    assert torch.equal(result.images, images) or torch.isnan(result.images).all()


# --- 5. compile fallback ----------------------------------------------------------------------


def _broken_compile(where: str):
    def compile(fn, *args: Any, **kwargs: Any):
        if where == "compile":
            raise RuntimeError("no compiler\nsecond line that must not be shown")

        def compiled(*a: Any, **k: Any):
            raise RuntimeError("no compiler at first call")

        return compiled

    return compile


@pytest.mark.parametrize("where", ["compile", "first-call"])
def test_adam_compile_fallback_notices_once_and_matches_eager(
    lenet_case: Any, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    case, target = lenet_case
    problem = matching_problem(case, target, "cosine")
    images = _start(2, seed=9)
    options: dict[str, Any] = {
        "lr": 0.1,
        "iterations": [4, 2],
        "log_every": 1,
        "progress": False,
    }
    eager = optimize_adam(problem, images, case.client.batch.labels, **options)
    monkeypatch.setattr(trial_step.torch, "compile", _broken_compile(where))
    notes: list[str] = []

    result = optimize_adam(
        problem, images, case.client.batch.labels, compile=True, notice=notes.append, **options
    )

    assert len(notes) == 1
    assert "compile" in notes[0]
    assert "no compiler" in notes[0]
    assert "\n" not in notes[0]
    assert result.compiled is False
    assert result.trial_iterations == eager.trial_iterations == [4, 2]
    torch.testing.assert_close(result.images, eager.images, rtol=0, atol=0)
    torch.testing.assert_close(result.losses, eager.losses, rtol=0, atol=0)


def test_lbfgs_compile_fallback_notices_once_and_matches_eager(
    lenet_case: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    case, target = lenet_case
    problem = matching_problem(case, target, "l2")
    images = _start(2, seed=10)
    options: dict[str, Any] = {
        "steps": 2,
        "inner_iterations": 3,
        "log_every": 1,
        "progress": False,
    }
    eager = optimize_lbfgs(problem, images, case.client.batch.labels, **options)
    monkeypatch.setattr(trial_step.torch, "compile", _broken_compile("compile"))
    notes: list[str] = []

    result = optimize_lbfgs(
        problem, images, case.client.batch.labels, compile=True, notice=notes.append, **options
    )

    assert len(notes) == 1 and "compile" in notes[0]
    assert result.compiled is False
    assert result.loss_evaluations == eager.loss_evaluations
    torch.testing.assert_close(result.images, eager.images, rtol=0, atol=0)
    torch.testing.assert_close(result.losses, eager.losses, rtol=0, atol=0)


# --- 6. real compile --------------------------------------------------------------------------


@pytest.mark.skipif(
    shutil.which("c++") is None and shutil.which("g++") is None,
    reason="inductor on CPU needs a C++ compiler",
)
def test_compiled_adam_matches_eager(lenet_case: Any) -> None:
    case, target = lenet_case
    # L2, not cosine: cosine's gradient has components near 1e-8 whose sign (all that signed
    # Adam's first step sees) rounding can flip, which moves one pixel by a whole step.
    problem = matching_problem(case, target, "l2")
    images = _start(2, seed=11)
    # Unequal budgets: the compiled step keeps its shape once trial 1 has finished.
    options: dict[str, Any] = {
        "lr": 0.1,
        "iterations": [5, 3],
        "log_every": 2,
        "progress": False,
    }
    notes: list[str] = []
    torch._dynamo.reset()
    try:
        compiled = optimize_adam(
            problem, images, case.client.batch.labels, compile=True, notice=notes.append, **options
        )
    finally:
        torch._dynamo.reset()
    eager = optimize_adam(problem, images, case.client.batch.labels, **options)

    assert notes == []
    assert compiled.compiled is True
    assert compiled.compile_seconds > 0
    assert compiled.seconds >= compiled.compile_seconds
    assert compiled.trial_iterations == [5, 3]
    torch.testing.assert_close(compiled.images, eager.images, rtol=0, atol=1e-4)
    torch.testing.assert_close(compiled.losses, eager.losses, rtol=1e-4, atol=1e-6)


# --- 7. memory --------------------------------------------------------------------------------


def _inputs(problem: MatchingProblem, images: torch.Tensor, labels: torch.Tensor):
    return trial_inputs(images, labels, problem, None, None)


def test_step_bytes_covers_parameters_and_grows_with_the_batch(lenet_case: Any) -> None:
    case, target = lenet_case
    problem = matching_problem(case, target, "cosine")
    parameter_bytes = sum(p.numel() * p.element_size() for p in problem.model.parameters())
    sizes = []
    for batch in (1, 4):
        images = _start(1, batch=batch)
        labels = torch.zeros(batch, dtype=torch.long)
        sizes.append(step_bytes(problem, images, _inputs(problem, images, labels)))
    assert sizes[0] >= parameter_bytes
    image_bytes = 3 * 32 * 32 * 4
    assert sizes[1] - sizes[0] >= 3 * image_bytes  # at least the three extra images
    assert all(isinstance(s, int) for s in sizes)


def test_ensure_trials_fit_raises_when_memory_is_short(
    lenet_case: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    case, target = lenet_case
    problem = matching_problem(case, target, "cosine")
    images = _start(7)
    inputs = _inputs(problem, images, case.client.batch.labels)
    one = step_bytes(problem, images, inputs)

    monkeypatch.setattr(memory, "available_bytes", lambda device: 1 << 50)
    needed = ensure_trials_fit(problem, images, inputs, 7)
    assert isinstance(needed, int)
    assert needed >= 7 * one

    monkeypatch.setattr(memory, "available_bytes", lambda device: None)
    assert ensure_trials_fit(problem, images, inputs, 7) == needed

    monkeypatch.setattr(memory, "available_bytes", lambda device: needed - 1)
    with pytest.raises(GradleakError) as error:
        ensure_trials_fit(problem, images, inputs, 7)
    message = str(error.value)
    assert "7 trials" in message
    assert "GiB" in message
    assert "\n" not in message
    # Fewer trials fit in the same memory.
    assert ensure_trials_fit(problem, images, inputs, 3) < needed


def test_optimize_adam_checks_memory_before_running(
    lenet_case: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    case, target = lenet_case
    problem = matching_problem(case, target, "cosine")
    images = _start(3)
    calls: list[int] = []

    def observer(iteration: int, losses: torch.Tensor, trials: torch.Tensor) -> None:
        calls.append(iteration)

    options: dict[str, Any] = {
        "lr": 0.1,
        "iterations": 2,
        "log_every": 1,
        "observer": observer,
        "progress": False,
    }
    monkeypatch.setattr(memory, "available_bytes", lambda device: 1024)

    with pytest.raises(GradleakError, match="3 trials"):
        optimize_adam(problem, images, case.client.batch.labels, check_memory=True, **options)
    assert calls == []

    # The check is what refused: without it the same run goes ahead.
    result = optimize_adam(problem, images, case.client.batch.labels, check_memory=False, **options)
    assert calls and result.trial_iterations == [2, 2, 2]
