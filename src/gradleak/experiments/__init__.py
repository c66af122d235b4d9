"""Run attacks end to end."""

from gradleak.experiments.case import Case, build_case
from gradleak.experiments.config import RunConfig, load_run_config
from gradleak.experiments.run import AttackOutcome, RunResult, attack_case, run_attack

__all__ = [
    "AttackOutcome",
    "Case",
    "RunConfig",
    "RunResult",
    "attack_case",
    "build_case",
    "load_run_config",
    "run_attack",
]
