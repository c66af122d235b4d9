"""What an attack returns, and the status that says whether it is an attack result."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import torch


class Status(str, Enum):
    """How an attack's optimisation ended; anything but OK is not a normal result.

    OK: the reconstruction is an attack result. DIVERGED: the optimisation blew up (a
    non-finite loss or inputs, or a loss far above its start) and ended no better than its
    random start, which is what the reconstruction then holds. NO_PROGRESS: the matching
    loss never fell below its start, or the inputs never moved. INTERRUPTED: Ctrl-C ended
    the attack; the reconstruction is partial.
    """

    OK = "ok"
    DIVERGED = "diverged"
    NO_PROGRESS = "no-progress"
    INTERRUPTED = "interrupted"


@dataclass
class Reconstruction:
    """Recovered inputs (normalised space, B×C×H×W), labels and how the attack got there.

    `loss` and `trial_losses` are the gradient-matching distances (no prior terms) of the
    kept and of every trial's final inputs: the distance restarts are ranked by.
    `status` says whether this is an attack result (`Status`), `status_reason` why not in
    one line (empty when OK), `trial_status` the same for every trial.
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    loss: float
    iterations: int
    seconds: float
    history: list[dict[str, float | int | None]] = field(default_factory=list)
    trial_losses: list[float] = field(default_factory=list)
    best_trial: int = 0
    loss_evaluations: int = 0
    label_strategy: str = ""
    labels_recovered: bool = True  # False when the threat model handed the labels over
    interrupted: bool = False
    stopped: bool = False  # an evaluation-side observer ended the attack early
    compiled: bool = False  # the step ran through torch.compile
    compile_seconds: float = 0.0  # part of `seconds` spent compiling (first step included)
    # mode, decision (one line: why), cache_hits, cache_misses (`engine.compiling`)
    compile_report: dict[str, object] = field(default_factory=dict)
    details: dict[str, object] = field(default_factory=dict)
    status: Status = Status.OK
    status_reason: str = ""  # one line; empty when the status is OK
    trial_status: list[Status] = field(default_factory=list)
