"""A run's wall-time budget (`gradleak attack --budget SECONDS`): fit the attack to it.

An Adam attack is timed on a few steps of this very problem (`measure_steps`), then given
the iterations and restarts that fit the seconds left (`plan_adam`: iterations first,
restarts only once each still gets enough iterations), its step-size schedule laid over
those iterations. Any other optimiser (L-BFGS) keeps its iterations. Either way a deadline
ends the attack when the budget is spent, should the estimate be too generous; the run is
then marked stopped and scored as it stands. Under `compile: auto` the fitted Adam run stays
eager, as it was timed (`compile: on` is timed compiled, its compile in the fixed cost).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from gradleak import attacks
from gradleak.attacks.engine.compiling import CompileMode, compile_mode
from gradleak.attacks.engine.hooks import Observer, StopAttack, deadline_observer
from gradleak.attacks.engine.time_fit import (
    FILL,
    RESTART_AFTER,
    TIMING_ITERATIONS,
    AdamPlan,
    iterations_that_fit,
    linear_cost,
    measure_steps,
    plan_adam,
)
from gradleak.core.errors import GradleakError
from gradleak.core.update import SharedUpdate
from gradleak.scenario.case import ServerView


@dataclass(frozen=True)
class BudgetFit:
    """An attack fitted to a budget.

    Attributes:
        attack: the attack with the planned iterations and restarts.
        until: the `time.monotonic()` reading at which the deadline ends the attack.
        plan: the Adam plan (None: the optimiser keeps its iterations, e.g. L-BFGS).
        timing_seconds: the seconds spent timing the attack.
    """

    attack: attacks.Attack
    until: float
    plan: AdamPlan | None
    timing_seconds: float


def fit_to_budget(
    attack: attacks.Attack,
    update: SharedUpdate,
    view: ServerView,
    seconds: float,
    *,
    seed: int = 0,
) -> BudgetFit:
    """Fit `attack` to `seconds` of wall time from now, timing it on `update`.

    Args:
        attack: the configured attack (its iterations and restarts are the most planned).
        update: the update it will attack (timed on it).
        view: the server's view it will be given.
        seconds: the budget, > 0; it includes the timing.
        seed: the run's seed (the timing runs use it too).

    Returns:
        The attack to run, its deadline, the plan and the time the timing took.

    Raises:
        GradleakError: for an attack with no iterations to fit (a closed form), or a budget
            that fits no iteration.
    """
    start = time.monotonic()
    until = start + seconds
    config = attack.config
    if getattr(config, "iterations", 0) <= 0:
        raise GradleakError(
            f"attack {attack.name} solves in closed form; --budget applies to optimisation "
            f"attacks: drop it"
        )
    if getattr(config, "optimizer", "") != "adam":
        # No schedule to lay over the iterations: the optimiser runs until the deadline.
        fitted = attack
        if hasattr(config, "lbfgs_max_hours"):  # the deadline bounds it instead
            fitted = attack.with_options({"lbfgs_max_hours": 0})
        return BudgetFit(fitted, until, None, 0.0)

    def timed(options: Mapping[str, int]) -> Callable[[int], float]:
        quick = attack.with_options(dict(options))

        def run(iterations: int) -> float:
            began = time.monotonic()
            result = quick.with_options({"iterations": iterations}).reconstruct(
                update, view.model, view.knowledge, seed=seed, progress=False
            )
            if result.interrupted:
                raise KeyboardInterrupt
            return time.monotonic() - began

        return run

    one = measure_steps(timed({"restarts": 1}))
    most_restarts, most_iterations = int(config.restarts), int(config.iterations)
    cost = linear_cost(one.per_iteration, one.per_iteration, 1)
    fits_one = iterations_that_fit(one.per_iteration, until - time.monotonic())
    if most_restarts > 1 and fits_one >= min(RESTART_AFTER, most_iterations):
        # Restarts may be planned: time them stacked once (on a GPU they cost less than one
        # each; on a CPU about one each).
        longer = TIMING_ITERATIONS[1]
        many = timed({"restarts": most_restarts})(longer)
        per_many = max(one.per_iteration, (many - one.fixed) / longer)
        cost = linear_cost(one.per_iteration, per_many, most_restarts)
    else:
        most_restarts = 1
    left = until - time.monotonic() - one.fixed
    if iterations_that_fit(one.per_iteration, left) < 1:
        needed = time.monotonic() - start + one.fixed + one.per_iteration / FILL
        raise GradleakError(
            f"--budget {seconds:g} s fits no iteration of {attack.name} (timing it took "
            f"{time.monotonic() - start:.2g} s, one iteration {one.per_iteration:.2g} s); "
            f"give at least {needed:.2g} s"
        )
    plan = plan_adam(
        left,
        cost,
        most_restarts=most_restarts,
        most_iterations=most_iterations,
    )
    options: dict[str, object] = {"iterations": plan.iterations, "restarts": plan.restarts}
    if compile_mode(config.compile) is CompileMode.AUTO:
        # The plan timed eager steps: a compile that `auto` might choose for the longer run
        # would spend time the plan never counted, so the fitted run stays eager.
        options["compile"] = False
    fitted = attack.with_options(options)
    return BudgetFit(fitted, until, plan, time.monotonic() - start)


def with_deadline(observer: Observer | None, until: float) -> Observer:
    """`observer`, then a deadline at `until` (`time.monotonic()`); either may stop the run.

    Args:
        observer: the evaluation side's observer, or None.
        until: when the budget ends.

    Returns:
        One observer: the first one's columns, and a stop once the deadline passed.
    """
    deadline = deadline_observer(until)

    def observe(
        iteration: int, losses: torch.Tensor, inputs: torch.Tensor
    ) -> Mapping[str, float] | None:
        columns = observer(iteration, losses, inputs) if observer is not None else None
        try:
            deadline(iteration, losses, inputs)
        except StopAttack as stop:
            raise StopAttack(str(stop), columns) from None
        return columns

    return observe
