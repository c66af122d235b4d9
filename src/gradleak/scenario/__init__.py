"""One run end to end: its configuration, the case, the attack, the evaluation, the outputs."""

from gradleak.scenario.case import Case, ClientData, ServerView, build_case
from gradleak.scenario.config import RunConfig, load_run_config
from gradleak.scenario.plan import RunPlan, plan_run
from gradleak.scenario.run import AttackOutcome, RunResult, attack_case, run_attack

__all__ = [
    "AttackOutcome",
    "Case",
    "ClientData",
    "RunConfig",
    "RunPlan",
    "RunResult",
    "ServerView",
    "attack_case",
    "build_case",
    "load_run_config",
    "plan_run",
    "run_attack",
]
