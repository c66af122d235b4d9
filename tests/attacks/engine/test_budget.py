"""The time estimate of L-BFGS runs, told before the run and refused beyond the bound."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import gradleak.attacks.gradient_matching as gradient_matching
from gradleak import attacks
from gradleak.attacks.engine.budget import (
    BudgetEstimate,
    check_budget,
    evaluations_per_step,
    lbfgs_estimate,
    measure_evaluation_seconds,
)
from gradleak.attacks.engine.trials import trial_inputs
from gradleak.core.errors import GradleakError
from gradleak.fl import FedSGDClient
from gradleak.scenario import RunConfig, build_case

from .problems import matching_problem

pytestmark = pytest.mark.usefixtures("one_thread")


def _ten_ms_a_trial(problem: Any, images: torch.Tensor, inputs: Any) -> float:
    """A stacked evaluation's time, 10 ms per trial: stacking saves nothing here."""
    return 0.01 * images.shape[0]


def test_estimate_is_trials_times_steps_times_evaluations_times_their_cost() -> None:
    estimate = lbfgs_estimate(8, 300, 20, 0.01)
    assert estimate.evaluations_per_step == evaluations_per_step(20) == 25  # torch's max_eval
    assert estimate.trial_seconds == pytest.approx(300 * 25 * 0.01)
    assert estimate.seconds == pytest.approx(8 * 300 * 25 * 0.01)
    assert (
        estimate.describe() == "8 trials × 300 steps × up to 25 evaluations × 10 ms: at most 10 min"
    )


def test_a_run_beyond_the_bound_is_refused_with_the_restarts_that_fit() -> None:
    estimate = lbfgs_estimate(50, 300, 20, 0.01)  # 75 s a trial, 62.5 min in all
    notices: list[str] = []
    with pytest.raises(GradleakError) as error:
        check_budget(estimate, 1.0, notice=notices.append)
    message = str(error.value)
    assert "\n" not in message
    assert "50 trials" in message and "at most 62 min" in message
    assert "--restarts 48 or fewer" in message  # 48 × 75 s = 60 min
    assert "lbfgs_max_hours: 1" in message
    assert notices == []


def test_one_trial_beyond_the_bound_names_the_iterations_that_fit() -> None:
    estimate = lbfgs_estimate(1, 300, 20, 1.0)  # 25 s a step: about 2.1 h
    with pytest.raises(GradleakError, match=r"--iterations 144 or fewer"):
        check_budget(estimate, 1.0)


def test_no_bound_and_short_runs() -> None:
    notices: list[str] = []
    long = lbfgs_estimate(50, 300, 20, 0.01)
    assert check_budget(long, 0.0, notice=notices.append) is long  # 0: no bound
    assert len(notices) == 1 and "at most 62 min" in notices[0]
    check_budget(lbfgs_estimate(1, 300, 20, 0.001), 1.0, notice=notices.append)  # 7.5 s
    assert len(notices) == 1  # short estimates are not told


def test_measured_cost_of_one_evaluation(lenet_case: Any) -> None:
    case, target = lenet_case
    problem = matching_problem(case, target, "l2")
    images = torch.zeros(1, 1, 3, 32, 32)
    inputs = trial_inputs(images, case.client.batch.labels, problem, None, None)
    seconds = measure_evaluation_seconds(problem, images, inputs)
    assert 0 < seconds < 5


@pytest.fixture(scope="module")
def dlg_target(one_thread: None) -> Any:
    case = build_case(RunConfig(model="lenet", indices=(0,), progress=False))
    update = FedSGDClient(case.server.model).compute_update(case.client.batch)
    return case, update


def test_the_attack_refuses_before_any_work(
    dlg_target: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    case, update = dlg_target
    monkeypatch.setattr(gradient_matching, "measure_evaluation_seconds", _ten_ms_a_trial)

    def must_not_run(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the optimisation started")

    monkeypatch.setattr(gradient_matching, "optimize_lbfgs", must_not_run)
    attack = attacks.get("dlg").with_options({"restarts": 50})
    with pytest.raises(GradleakError, match="--restarts 48 or fewer"):
        attack.reconstruct(update, case.server.model, case.server.knowledge, progress=False)
    # The same check without attacking, for studies that check their cells up front.
    with pytest.raises(GradleakError, match="--restarts 48 or fewer"):
        attack.check_budget(update, case.server.model, case.server.knowledge)
    # A raised bound lets the run go ahead, and says how long it may take.
    notices: list[str] = []
    allowed = attacks.get("dlg").with_options({"restarts": 50, "lbfgs_max_hours": 2})
    estimate = allowed.check_budget(
        update, case.server.model, case.server.knowledge, notice=notices.append
    )
    assert isinstance(estimate, BudgetEstimate) and estimate.trials == 50
    assert len(notices) == 1
    with pytest.raises(AssertionError, match="the optimisation started"):
        allowed.reconstruct(update, case.server.model, case.server.knowledge, progress=False)


def test_reconstruct_many_bounds_the_whole_batch_of_updates(
    dlg_target: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 30 restarts of one update fit the hour (30 × 75 s); of two updates, run one after
    # another, they do not, and the restarts that fit are counted per update.
    case, update = dlg_target
    monkeypatch.setattr(gradient_matching, "measure_evaluation_seconds", _ten_ms_a_trial)

    def must_not_run(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the optimisation started")

    monkeypatch.setattr(gradient_matching, "optimize_lbfgs", must_not_run)
    attack = attacks.get("dlg").with_options({"restarts": 30})
    model, knowledge = case.server.model, case.server.knowledge
    with pytest.raises(GradleakError, match=r"60 trials .* --restarts 24 or fewer"):
        attack.reconstruct_many([update, update], model, knowledge, progress=False)
    with pytest.raises(AssertionError, match="the optimisation started"):
        attack.reconstruct_many([update], model, knowledge, progress=False)


def test_adam_runs_are_not_estimated(dlg_target: Any) -> None:
    case, update = dlg_target
    attack = attacks.get("ig").with_options({"label_strategy": "analytic"})
    assert attack.check_budget(update, case.server.model, case.server.knowledge) is None


def test_the_bound_is_checked_as_a_setting() -> None:
    with pytest.raises(GradleakError, match="lbfgs_max_hours must be zero or positive"):
        attacks.get("dlg").with_options({"lbfgs_max_hours": -1})


def test_stacked_trials_are_estimated_by_one_stacked_evaluation() -> None:
    # 16 trials in one stack: one group's steps × one stacked evaluation, not 16× one trial.
    estimate = lbfgs_estimate(16, 300, 20, 0.04, stack=16)
    assert estimate.groups == 1
    assert estimate.seconds == pytest.approx(300 * 25 * 0.04)
    assert estimate.describe().startswith("16 trials in 1 stack of 16 × 300 steps")
    # Two groups (memory split them) run one after another.
    assert lbfgs_estimate(20, 300, 20, 0.04, stack=16).seconds == pytest.approx(2 * 300)


def test_the_attack_times_one_evaluation_of_the_whole_stack(
    dlg_target: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    case, update = dlg_target
    stacks: list[int] = []

    def timed(problem: Any, images: torch.Tensor, inputs: Any) -> float:
        stacks.append(images.shape[0])
        assert inputs.tv_weight.shape == (images.shape[0],)
        return 0.001

    monkeypatch.setattr(gradient_matching, "measure_evaluation_seconds", timed)
    attack = attacks.get("dlg").with_options({"restarts": 6})
    estimate = attack.check_budget(update, case.server.model, case.server.knowledge)
    assert stacks == [6]
    assert estimate is not None and (estimate.trials, estimate.stack) == (6, 6)
    assert estimate.seconds == pytest.approx(300 * 25 * 0.001)
