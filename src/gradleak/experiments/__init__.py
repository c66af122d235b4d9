"""Run attacks end to end."""

from gradleak.experiments.case import Case, build_case
from gradleak.experiments.config import RunConfig, load_run_config
from gradleak.experiments.run import RunResult, run_attack

__all__ = ["Case", "RunConfig", "RunResult", "build_case", "load_run_config", "run_attack"]
