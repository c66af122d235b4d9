"""Planning an Adam attack's iterations and restarts from measured step times (pure)."""

from __future__ import annotations

import pytest

from gradleak.attacks.engine.time_fit import (
    FILL,
    RESTART_AFTER,
    iterations_that_fit,
    linear_cost,
    measure_steps,
    plan_adam,
)
from gradleak.core.errors import GradleakError


def test_measure_steps_separates_the_fixed_cost_from_the_slope() -> None:
    calls: list[int] = []

    def run(iterations: int) -> float:
        calls.append(iterations)
        return 0.5 + 0.1 * iterations

    timing = measure_steps(run)
    assert calls == [1, 3, 12]  # warm-up, short, long
    assert timing.per_iteration == pytest.approx(0.1)
    assert timing.fixed == pytest.approx(0.5)
    assert timing.spent == pytest.approx(0.6 + 0.8 + 1.7)


def test_a_noisy_timing_never_promises_free_iterations() -> None:
    # The long run came out no slower than the short one: the floor is a quarter of its mean.
    timing = measure_steps(lambda n: 1.2)
    assert timing.per_iteration == pytest.approx(1.2 / 12 / 4)


def test_iterations_that_fit() -> None:
    assert iterations_that_fit(0.01, 10.0) == int(10.0 * FILL / 0.01)
    assert iterations_that_fit(0.01, 10.0, most=300) == 300
    assert iterations_that_fit(0.01, -1.0) == 0


def test_short_budgets_buy_iterations_not_restarts() -> None:
    cpu = linear_cost(0.01, 0.08, 8)  # eight stacked restarts cost eight times one
    plan = plan_adam(10.0, cpu, most_restarts=8, most_iterations=24_000)
    assert (plan.iterations, plan.restarts) == (850, 1)
    assert plan.estimate == pytest.approx(8.5)


def test_long_budgets_add_restarts_that_each_get_enough_iterations() -> None:
    cpu = linear_cost(0.01, 0.08, 8)
    seconds = 5 * RESTART_AFTER * 0.01 / FILL  # five restarts of RESTART_AFTER fit, not six
    plan = plan_adam(seconds * 1.0001, cpu, most_restarts=8, most_iterations=24_000)
    assert plan.restarts == 5
    assert plan.iterations >= RESTART_AFTER
    assert plan.estimate <= seconds * 1.0001 * FILL


def test_capped_iterations_spend_the_rest_on_restarts() -> None:
    gpu = linear_cost(0.01, 0.012, 8)  # stacking is almost free on a GPU
    plan = plan_adam(1_000.0, gpu, most_restarts=8, most_iterations=500)
    assert (plan.iterations, plan.restarts) == (500, 8)


def test_a_budget_that_fits_no_step_is_refused() -> None:
    with pytest.raises(GradleakError, match="fits no iteration"):
        plan_adam(0.005, linear_cost(0.01, 0.01, 1))


def test_linear_cost() -> None:
    cost = linear_cost(0.01, 0.08, 8)
    assert [round(cost(k), 6) for k in (1, 2, 8)] == [0.01, 0.02, 0.08]
    assert linear_cost(0.01, 0.5, 1)(4) == 0.01  # one timing: no slope to extrapolate
