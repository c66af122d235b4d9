"""What an audit is asked to do: the deployment to audit, its time budget and its gates.

The deployment itself (model, data, protocol, defenses, device) is a `RunConfig`, the same
settings a single `gradleak attack` takes; the audit adds the time budget, how many client
updates it attacks and the thresholds that make it fail (`--fail-above`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from gradleak.core.errors import GradleakError
from gradleak.scenario.config import RunConfig

# Seconds per unit of a budget ("90s", "10m", "1.5h"; a bare number is seconds).
_UNITS: Mapping[str, float] = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}
_BUDGET = re.compile(r"\s*(?P<value>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>[smh]?)\s*", re.IGNORECASE)
MAX_BUDGET_SECONDS = 7 * 24 * 3600.0
MAX_SAMPLES = 1000
MAX_ITERATIONS = 1_000_000
DEFAULT_BUDGET_SECONDS = 600.0
DEFAULT_SAMPLES = 4


def parse_budget(text: str) -> float:
    """A time budget in seconds from "90", "90s", "10m" or "1.5h".

    Args:
        text: the budget as written on the command line.

    Returns:
        The budget in seconds, > 0.

    Raises:
        GradleakError: text that is not a positive number with an optional s/m/h unit, or a
            budget beyond a week.
    """
    match = _BUDGET.fullmatch(str(text))
    if match is None:
        raise GradleakError(
            f"--budget {text!r} is not a duration; write seconds or a number with s, m or h, "
            "e.g. 90s, 10m, 1.5h"
        )
    seconds = float(match["value"]) * _UNITS[match["unit"].lower()]
    if not 0 < seconds <= MAX_BUDGET_SECONDS:
        raise GradleakError(f"--budget must be more than 0 and at most a week, got {text!r}")
    return seconds


@dataclass(frozen=True)
class Gate:
    """One `--fail-above KEY=VALUE`: the audit fails when the leakage score KEY exceeds VALUE.

    Attributes:
        key: a key of `GATE_KEYS`.
        limit: the highest value that still passes.
    """

    key: str
    limit: float

    def __str__(self) -> str:
        return f"{self.key}={self.limit:g}"


# The leakage scores a gate can read (all from the audit's overall row), with their meaning.
GATE_KEYS: Mapping[str, str] = {
    "psnr": "median PSNR (dB) of the images, under the attack that leaks most",
    "worst-psnr": "PSNR (dB) of the best-reconstructed image of any attack",
    "ssim": "median SSIM of the images, under the attack that leaks most",
    "worst-ssim": "SSIM of the best-reconstructed image of any attack",
    "recognisable": "fraction of images some attack reconstructs recognisably",
    "leakage": "median relative leakage (0: no better than the mean image, 1: exact)",
    "labels": "fraction of labels recovered by the best attack",
    "exact": "text: fraction of sentences some attack recovers exactly",
    "rouge1": "text: median ROUGE-1 of the sentences, under the attack that leaks most",
}
# The gate keys each kind of data has scores for.
GATE_MODALITIES: Mapping[str, frozenset[str]] = {
    "image": frozenset(GATE_KEYS) - {"exact", "rouge1"},
    "text": frozenset({"recognisable", "leakage", "labels", "exact", "rouge1"}),
}


def parse_gate(text: str) -> Gate:
    """A `--fail-above` rule from "KEY=VALUE".

    Args:
        text: e.g. "psnr=20" or "recognisable=0.1".

    Returns:
        The gate.

    Raises:
        GradleakError: no "=", an unknown key (the line lists the keys), or a value that is
            not a finite number.
    """
    key, sep, value = str(text).partition("=")
    key = key.strip().lower()
    if not sep:
        raise GradleakError(f"--fail-above {text!r} needs KEY=VALUE, e.g. psnr=20")
    if key not in GATE_KEYS:
        raise GradleakError(
            f"--fail-above: unknown key {key!r}; choose one of: {', '.join(GATE_KEYS)}"
        )
    try:
        limit = float(value)
    except ValueError:
        raise GradleakError(f"--fail-above {text!r}: {value!r} is not a number") from None
    if not math.isfinite(limit):
        raise GradleakError(f"--fail-above {text!r}: the limit must be a finite number")
    return Gate(key, limit)


@dataclass(frozen=True)
class AuditSettings:
    """One audit.

    Attributes:
        run: the deployment: model, data, protocol, defenses, device and seed, as for one
            attack (its `attack` and `indices` are chosen by the audit).
        budget: seconds the whole audit may take, setting up included.
        samples: client updates attacked; update i holds the images from index
            i × (batch size × users) on.
        gates: the `--fail-above` rules.
        priors: image priors for Inverting Gradients (empty: the strongest the model
            allows, see `selection.py`).
        attacks: the attacks to run (empty: every one that applies).
        iterations: every optimisation attack's iterations (None: what the budget fits);
            fixed iterations make the scores repeat run after run, as long as the budget
            does not end an attack first.
        out: the output folder.
        progress: show a progress bar.
    """

    run: RunConfig
    budget: float = DEFAULT_BUDGET_SECONDS
    samples: int = DEFAULT_SAMPLES
    gates: tuple[Gate, ...] = ()
    priors: tuple[str, ...] = ()
    attacks: tuple[str, ...] = ()
    iterations: int | None = None
    out: Path = Path("audit")
    progress: bool = True

    def validate(self) -> AuditSettings:
        """Check the settings before any work.

        Returns:
            These settings.

        Raises:
            GradleakError: a sample count outside 1..`MAX_SAMPLES`, a budget out of range, or
                run settings that cannot run (one line each).
        """
        if not 1 <= self.samples <= MAX_SAMPLES:
            raise GradleakError(f"--samples must be in 1..{MAX_SAMPLES}, got {self.samples}")
        if not 0 < self.budget <= MAX_BUDGET_SECONDS:
            raise GradleakError(
                f"--budget must be more than 0 and at most a week, got {self.budget}"
            )
        if self.run.rounds != 1:
            raise GradleakError("an audit attacks the first round's updates; drop --rounds")
        from gradleak.attacks.matching.priors import parse_priors
        from gradleak.studies.audit.selection import check_attack_names

        check_attack_names(self.attacks)
        parse_priors(self.priors)
        self.run.validate()
        scored = GATE_MODALITIES[self.run.modality]
        for gate in self.gates:
            if gate.key not in scored:
                keys = ", ".join(k for k in GATE_KEYS if k in scored)
                raise GradleakError(
                    f"--fail-above {gate}: an audit of {self.run.modality} data has no "
                    f"{gate.key} score; use one of: {keys}"
                )
        if self.iterations is not None and not 1 <= self.iterations <= MAX_ITERATIONS:
            raise GradleakError(
                f"--iterations must be in 1..{MAX_ITERATIONS}, got {self.iterations}"
            )
        return self
