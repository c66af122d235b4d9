"""The engine's callback hook: what an observer of the optimisation sees and how it stops it."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

# Called every `log_every` iterations with (iteration, per-trial loss, per-trial images);
# may return extra columns for the history (the evaluation side adds PSNR this way).
Observer = Callable[[int, torch.Tensor, torch.Tensor], "Mapping[str, float] | None"]


class StopAttack(Exception):  # noqa: N818 - a signal, not an error
    """Raised by an observer to end the attack early (e.g. a target PSNR was reached)."""
