"""One run end to end: its configuration, the case, the attack, the evaluation, the outputs."""

from gradleak.scenario.case import Case, build_case
from gradleak.scenario.config import RunConfig, load_run_config
from gradleak.scenario.run import AttackOutcome, RunResult, attack_case, run_attack

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
