"""The optimisation engine: stacked trials, their step, Adam and L-BFGS, restart selection and
each trial's verdict, memory and time checks."""

from gradleak.attacks.engine.adam import optimize_adam
from gradleak.attacks.engine.budget import BudgetEstimate, check_budget
from gradleak.attacks.engine.hooks import Observer, StopAttack
from gradleak.attacks.engine.lbfgs import optimize_lbfgs
from gradleak.attacks.engine.status import TrialStatus
from gradleak.attacks.engine.trials import TrialsResult, best_trial, select

__all__ = [
    "BudgetEstimate",
    "Observer",
    "StopAttack",
    "TrialStatus",
    "TrialsResult",
    "best_trial",
    "check_budget",
    "optimize_adam",
    "optimize_lbfgs",
    "select",
]
