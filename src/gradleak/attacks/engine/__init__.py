"""The optimisation engine: stacked trials, their step, Adam and L-BFGS, memory checks."""

from gradleak.attacks.engine.adam import optimize_adam
from gradleak.attacks.engine.hooks import Observer, StopAttack
from gradleak.attacks.engine.lbfgs import optimize_lbfgs
from gradleak.attacks.engine.trials import TrialsResult, best_trial

__all__ = [
    "Observer",
    "StopAttack",
    "TrialsResult",
    "best_trial",
    "optimize_adam",
    "optimize_lbfgs",
]
