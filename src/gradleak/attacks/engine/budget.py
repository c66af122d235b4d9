"""Estimate the time of L-BFGS trials before running them; refuse runs beyond a bound.

L-BFGS stacks its trials (`lbfgs.py`): every loss evaluation is one stacked call, so K
restarts do not cost K times one trial. A stack that does not fit in memory runs in groups
one after another (`memory.trial_groups`). The estimate is an upper bound: groups × outer
steps × the most loss evaluations L-BFGS makes in one step × the measured time of one
stacked evaluation of a group on this problem. Trials that converge (or stall for
`LBFGS_PATIENCE` steps) stop sooner.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch

from gradleak.attacks.engine.step import Notice, TrialInputs, TrialStep, print_notice
from gradleak.attacks.matching.problem import MatchingProblem
from gradleak.core.errors import GradleakError

HOUR = 3600.0
# Estimates at least this long are printed before the run starts.
NOTICE_SECONDS = 60.0
# Timed evaluations of the loss (their median is kept: one slow first call does not count).
REPEATS = 3


def evaluations_per_step(inner_iterations: int) -> int:
    """The most loss evaluations torch's L-BFGS makes in one outer step.

    torch stops an outer step after `max_eval` evaluations, `max_iter` × 5 / 4 by default;
    a fixed step evaluates once per iteration, so at most `max_iter`.
    """
    return max(1, inner_iterations * 5 // 4)


@dataclass(frozen=True)
class BudgetEstimate:
    """The longest an L-BFGS run can take, and what the bound is made of.

    Attributes:
        trials: all trials of the run.
        steps: outer steps per trial.
        evaluations_per_step: the most loss evaluations of one outer step.
        seconds_per_evaluation: the measured time of one stacked loss evaluation (with its
            gradient) of `stack` trials.
        stack: the trials evaluated together (a group; the groups run one after another).
    """

    trials: int
    steps: int
    evaluations_per_step: int
    seconds_per_evaluation: float
    stack: int = 1

    @property
    def groups(self) -> int:
        """Stacks run one after another."""
        return -(-self.trials // max(1, self.stack))

    @property
    def trial_seconds(self) -> float:
        """The longest one stack (group) can take."""
        return self.steps * self.evaluations_per_step * self.seconds_per_evaluation

    @property
    def seconds(self) -> float:
        """The longest the whole run can take."""
        return self.groups * self.trial_seconds

    def describe(self) -> str:
        """'8 trials × 300 steps × up to 25 evaluations × 12.0 ms: at most 2.0 h'.

        Stacked trials say so: '8 trials in 1 stack of 8 × 300 steps × …'.
        """
        trials = f"{self.trials} trial{'s' if self.trials != 1 else ''}"
        if self.stack > 1:
            groups = self.groups
            trials += f" in {groups} stack{'s' if groups != 1 else ''} of {self.stack}"
        return (
            f"{trials} × {self.steps} steps × up to {self.evaluations_per_step} evaluations × "
            f"{self.seconds_per_evaluation * 1000:.3g} ms: at most {spell_seconds(self.seconds)}"
        )


def spell_seconds(seconds: float) -> str:
    """A duration for people: seconds below two minutes, minutes below two hours, else hours."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * HOUR:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / HOUR:.1f} h"


def measure_evaluation_seconds(
    problem: MatchingProblem, images: torch.Tensor, inputs: TrialInputs
) -> float:
    """The time of one stacked loss evaluation with its gradient, as L-BFGS computes it.

    Args:
        problem: the matching problem.
        images: the stacked trials' inputs S×B×C×H×W on the device the trials use
            (`stacked_sample` builds S copies of one trial).
        inputs: their labels, target and prior weight.

    Returns:
        The median of `REPEATS` timed evaluations, in seconds (eager: a compiled step is
        faster, so the estimate stays an upper bound).
    """
    step = TrialStep(problem)
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        # Reading the loss waits for the device, as every L-BFGS evaluation does.
        float(step(images, inputs)[2][0])
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def stacked_sample(
    images: torch.Tensor, inputs: TrialInputs, trials: int
) -> tuple[torch.Tensor, TrialInputs]:
    """`trials` copies of one trial's inputs (1×…), as a stack of that many trials."""
    labels = inputs.labels
    if inputs.labels_per_trial:
        labels = labels[:1].expand(trials, *labels.shape[1:]).contiguous()
    target = inputs.target
    if inputs.target_per_trial:
        target = {n: t[:1].expand(trials, *t.shape[1:]).contiguous() for n, t in target.items()}
    stacked = TrialInputs(
        labels,
        target,
        inputs.tv_weight[:1].expand(trials).contiguous(),
        inputs.labels_per_trial,
        inputs.target_per_trial,
    )
    return images[:1].expand(trials, *images.shape[1:]).contiguous(), stacked


def lbfgs_estimate(
    trials: int,
    steps: int,
    inner_iterations: int,
    seconds_per_evaluation: float,
    stack: int = 1,
) -> BudgetEstimate:
    """The upper bound of an L-BFGS run's time from its settings and one stacked
    evaluation's time (`stack` trials evaluated together)."""
    return BudgetEstimate(
        trials, steps, evaluations_per_step(inner_iterations), seconds_per_evaluation, stack
    )


def check_budget(
    estimate: BudgetEstimate,
    max_hours: float,
    *,
    notice: Notice = print_notice,
    updates: int = 1,
) -> BudgetEstimate:
    """Refuse a run whose estimate exceeds `max_hours`; tell `notice` a long estimate.

    Args:
        estimate: the run's upper bound (`lbfgs_estimate`), over all its trials.
        max_hours: the bound in hours; 0 means no bound.
        notice: where an estimate of `NOTICE_SECONDS` or more is told, in one line.
        updates: how many updates the trials attack, `restarts` trials each (several
            for `reconstruct_many`), so the restarts that fit are counted per update.

    Returns:
        The estimate, unchanged.

    Raises:
        GradleakError: when the estimate exceeds the bound. The line says how many
            restarts (or, when one trial alone is too long, how many iterations) fit, and
            the attack option that raises the bound.
    """
    bound = max_hours * HOUR
    if max_hours > 0 and estimate.seconds > bound:
        raise GradleakError(
            f"L-BFGS: {estimate.describe()}, above the "
            f"{max_hours:g} h bound; {_what_fits(estimate, bound, updates)}, or raise the "
            f"bound with the attack option lbfgs_max_hours: {_hours_needed(estimate)} "
            "(0: no bound)"
        )
    if estimate.seconds >= NOTICE_SECONDS:
        notice(f"L-BFGS: {estimate.describe()} (trials that converge stop sooner)")
    return estimate


def _what_fits(estimate: BudgetEstimate, bound: float, updates: int) -> str:
    # A stack costs at most its trials' separate costs: its share per trial bounds what fits.
    per_trial = estimate.trial_seconds / max(1, estimate.stack)
    restarts = int(bound // per_trial) // updates
    if restarts >= 1:
        return f"use --restarts {restarts} or fewer"
    per_step = estimate.evaluations_per_step * estimate.seconds_per_evaluation / estimate.stack
    iterations = max(1, int(bound // per_step))
    return f"one trial alone is too long: use --iterations {iterations} or fewer"


def _hours_needed(estimate: BudgetEstimate) -> str:
    hours = estimate.seconds / HOUR
    return f"{hours:.2g}" if hours >= 1 else f"{hours:.2f}"
