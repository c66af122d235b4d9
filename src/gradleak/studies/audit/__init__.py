"""`gradleak audit`: does a federated setup leak? Every attack that applies, within a time
budget, scored against a no-information baseline, with a verdict that can gate a CI job."""

from gradleak.studies.audit.runner import AuditResult, run_audit
from gradleak.studies.audit.scores import RECOGNISABLE_SSIM, Verdict
from gradleak.studies.audit.settings import GATE_KEYS, AuditSettings, Gate, parse_budget, parse_gate

__all__ = [
    "GATE_KEYS",
    "RECOGNISABLE_SSIM",
    "AuditResult",
    "AuditSettings",
    "Gate",
    "Verdict",
    "parse_budget",
    "parse_gate",
    "run_audit",
]
