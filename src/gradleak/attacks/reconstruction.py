"""What an attack returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Reconstruction:
    """Recovered inputs (normalised space, B×C×H×W), labels and how the attack got there."""

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
    details: dict[str, object] = field(default_factory=dict)
