"""The engine's callback hook: what an observer of the optimisation sees and how it stops it.

An `Observer` is a callable `observer(iteration, losses, inputs)`. The engine calls it
every `log_every` iterations and for the final row of the history (Adam always, after
scoring every trial; L-BFGS unless a trial's last step was just logged), and never again
once it has raised `StopAttack`:

* `iteration`: the steps taken so far (Adam: 0, log_every, 2·log_every, …, then the
  steps done; L-BFGS: each trial's outer steps log_every, 2·log_every, …, then its last).
* `losses`: the per-trial gradient-matching distances (the loss's data term, without the
  prior: what restart selection ranks), a detached tensor of K values (Adam: every
  stacked trial's latest; L-BFGS: one value, at the best iterate of the trial that has just
  finished an outer step, the trial its history row names). In
  Adam's final row a diverged trial's value is NaN while another trial has not diverged,
  so `best_trial(losses)` there is the trial the attack keeps.
* `inputs`: the per-trial inputs in the attacked (normalised) space, detached,
  K×B×C×H×W (L-BFGS: 1×B×C×H×W, that trial's best iterate).

It may return a mapping of extra columns (name → number) that are added to that
iteration's history row next to `iteration`, `trial`, `loss` and `distance`; None adds
nothing. It may raise `StopAttack` to end the run early: Adam stops stepping every trial,
L-BFGS ends every stacked trial at its best iterate, and the result says `stopped`.
The row of that call is kept with the columns the exception carries (`StopAttack(message,
columns)`), and the observer is not called again: the final row, when it differs from that
one, is recorded without it. Observers must not change the tensors they are given.

The attack side never reads the truth; the evaluation side's observer, which scores the
best trial against the private data (and keeps snapshots, and stops at a target PSNR),
lives in `gradleak.scenario.observe` (`psnr_observer`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import torch

# Called every `log_every` iterations with (iteration, per-trial loss, per-trial images);
# may return extra columns for the history (the evaluation side adds PSNR this way).
Observer = Callable[[int, torch.Tensor, torch.Tensor], "Mapping[str, float] | None"]


class StopAttack(Exception):  # noqa: N818 - a signal, not an error
    """Raised by an observer to end the attack early (e.g. a target PSNR was reached).

    The engine catches it, keeps the trials as they are, scores them and returns a result
    with `stopped` set; it never reaches the attack's caller, and it never calls that
    observer again. The message is for people reading logs only.

    Args:
        message: why the attack stops, for logs.
        columns: the history columns of the call that raised it (what the observer would
            have returned); they are kept in that iteration's row.
    """

    def __init__(self, message: str = "", columns: Mapping[str, float] | None = None) -> None:
        super().__init__(message)
        self.columns: dict[str, float] = dict(columns or {})


def deadline_observer(until: float) -> Observer:
    """An observer that ends the attack once the clock passes `until`; it reads no truth.

    Time-budgeted studies (`gradleak audit`) give it to the engine so an attack ends on
    time even where its iterations were estimated too generously; the engine then keeps
    the trials as they are and marks the result `stopped`.

    Args:
        until: a `time.monotonic()` reading after which the next observer call stops.

    Returns:
        The engine's callback hook; it adds no history columns.
    """

    def observe(iteration: int, losses: torch.Tensor, inputs: torch.Tensor) -> None:
        if time.monotonic() >= until:
            raise StopAttack(f"time budget spent at iteration {iteration}")

    return observe
