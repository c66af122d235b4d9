"""Fit an Adam attack to a wall-time budget: time a few steps, then plan iterations × restarts.

Adam's step sizes follow a schedule laid over its planned iterations, so a time-bounded
run must know its iterations before it starts: it cannot simply run until a deadline.
The attack is therefore timed on short runs of the real problem (`measure_steps`), and the
iterations (and restarts) that fit the seconds left are planned from that
(`iterations_that_fit`, `plan_adam`). A deadline observer
(`gradleak.attacks.engine.hooks.deadline_observer`) still ends the run should the estimate
be too generous. `gradleak attack --budget` and `gradleak audit` both plan this way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gradleak.core.errors import GradleakError

# Iterations of the two timing runs (the slope between them is the time of one iteration).
TIMING_ITERATIONS = (3, 12)
# Share of the estimated time a plan fills; the rest absorbs noise in the timing.
FILL = 0.85
# Restarts are worth their time only once each restart still gets this many iterations:
# below it, one longer run recovers more than several short ones (docs/RESULTS.md, IG
# defaults at equal wall time).
RESTART_AFTER = 2_000


@dataclass(frozen=True)
class StepTiming:
    """What timing an attack's short runs found.

    Attributes:
        per_iteration: seconds of one iteration, without the run's fixed costs.
        fixed: seconds a run costs whatever its iterations (setup, scoring), >= 0.
        spent: seconds the timing runs took.
    """

    per_iteration: float
    fixed: float
    spent: float


def measure_steps(
    run: Callable[[int], float], iterations: tuple[int, int] = TIMING_ITERATIONS
) -> StepTiming:
    """Time `run` (which runs the attack for n iterations and returns its seconds).

    A first one-iteration run pays the one-off costs (allocations, first passes) that would
    otherwise make the short run look as slow as the long one; the slope between the short
    and the long run is one iteration's time, floored at a quarter of the long run's mean so
    that a noisy pair of timings cannot promise free iterations.

    Args:
        run: runs the attack for the given iterations; returns the seconds it took.
        iterations: the short and the long timing run's iterations (short < long).

    Returns:
        The time of one iteration, the fixed cost of a run and the time the timing took.
    """
    short, longer = iterations
    warm = run(1)
    first = run(short)
    second = run(longer)
    per_iteration = max((second - first) / (longer - short), second / longer / 4)
    fixed = max(0.0, second - per_iteration * longer)
    return StepTiming(per_iteration, fixed, warm + first + second)


def iterations_that_fit(
    per_iteration: float, seconds: float, *, most: int | None = None, fill: float = FILL
) -> int:
    """How many iterations of `per_iteration` seconds fit `fill` of `seconds` (>= 0).

    Args:
        per_iteration: seconds of one iteration, > 0.
        seconds: the time available; none fit in zero or less.
        most: the most iterations to plan (None: no cap).
        fill: the share of `seconds` to plan for.

    Returns:
        The iterations, between 0 and `most`.
    """
    fits = int(seconds * fill / per_iteration) if seconds > 0 else 0
    return fits if most is None else min(most, fits)


@dataclass(frozen=True)
class AdamPlan:
    """An Adam run fitted to a budget.

    Attributes:
        iterations: iterations per restart; the schedule is laid over these.
        restarts: trials run side by side (stacked).
        estimate: the seconds the plan is expected to take.
    """

    iterations: int
    restarts: int
    estimate: float


def plan_adam(
    seconds: float,
    per_iteration: Callable[[int], float],
    *,
    most_restarts: int = 1,
    most_iterations: int | None = None,
    restart_after: int = RESTART_AFTER,
    fill: float = FILL,
) -> AdamPlan:
    """Spend `seconds` the way that recovers most: iterations first, restarts after.

    One trial gets all the time until it would run `restart_after` iterations or more per
    restart with a second one beside it; then the most restarts (up to `most_restarts`)
    that each still get `restart_after` iterations are planned. On a GPU several stacked
    restarts cost little more than one, which `per_iteration(restarts)` says.

    Args:
        seconds: the time the run may take (after timing), > 0.
        per_iteration: seconds of one iteration with the given restarts stacked.
        most_restarts: the most restarts to plan, >= 1.
        most_iterations: the most iterations per restart (None: no cap).
        restart_after: the fewest iterations per restart that make an extra restart worth it.
        fill: the share of `seconds` to plan for.

    Returns:
        The iterations per restart, the restarts and the estimated seconds.

    Raises:
        GradleakError: when not even one iteration of one trial fits `seconds`.
    """
    one = per_iteration(1)
    iterations = iterations_that_fit(one, seconds, most=most_iterations, fill=fill)
    if iterations < 1:
        raise GradleakError(
            f"a budget of {seconds:.3g} s fits no iteration (one takes about {one:.3g} s); "
            f"give a larger --budget"
        )
    best = AdamPlan(iterations, 1, iterations * one)
    capped = most_iterations is not None and iterations >= most_iterations
    for restarts in range(2, max(1, most_restarts) + 1):
        cost = per_iteration(restarts)
        each = iterations_that_fit(cost, seconds, most=most_iterations, fill=fill)
        # More restarts once every restart still gets its share, or once iterations are
        # capped (the time left over buys restarts at no cost to the iterations).
        if each >= restart_after or (capped and each >= iterations):
            best = AdamPlan(each, restarts, each * cost)
    return best


def linear_cost(one: float, many: float, restarts: int) -> Callable[[int], float]:
    """Seconds per iteration for any restarts, from timings at 1 and `restarts` stacked.

    Args:
        one: seconds of one iteration of one trial.
        many: seconds of one iteration of `restarts` stacked trials.
        restarts: how many were stacked for `many` (>= 1).

    Returns:
        restarts → seconds per iteration, linear through the two timings (never below
        `one`).
    """
    slope = 0.0 if restarts <= 1 else max(0.0, (many - one) / (restarts - 1))
    return lambda k: one + slope * (k - 1)
