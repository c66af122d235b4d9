"""The time check of a run's attack, made without attacking: studies call it to check their
cells before any cell runs (every run makes the same check again before its attack)."""

from __future__ import annotations

from gradleak.attacks.base import Budgeted
from gradleak.attacks.engine.budget import BudgetEstimate
from gradleak.attacks.engine.step import Notice, print_notice
from gradleak.scenario.config import RunConfig
from gradleak.scenario.plan import plan_run
from gradleak.scenario.run import attacked_view


def check_run_budget(config: RunConfig, *, notice: Notice = print_notice) -> BudgetEstimate | None:
    """Estimate how long the run's attack may take and refuse it beyond the attack's bound.

    The case is built and the clients are simulated (one round's updates: cheap next to an
    attack) so that the estimate times the very problem the attack would solve; nothing is
    attacked or written.

    Args:
        config: the run's settings.
        notice: where an estimate of a minute or more is told in one line.

    Returns:
        The estimate (L-BFGS attacks), or None for an attack whose time is not estimated.

    Raises:
        GradleakError: settings that cannot run, missing data, or an estimate beyond the
            attack's bound (`lbfgs_max_hours`; the line says how many restarts fit).
    """
    plan = plan_run(config)
    if not isinstance(plan.attack, Budgeted):
        return None
    _, update, attacked = attacked_view(plan)
    return plan.attack.check_budget(update, attacked.model, attacked.knowledge, notice=notice)
