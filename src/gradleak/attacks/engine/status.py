"""Whether each trial's optimisation worked: ok, diverged, no progress; and the run's status.

The optimisers report every loss they already read on the host to a `TrialWatch` (Adam:
at its `log_every` checks, so the hot loop never waits for the device; L-BFGS: every
evaluation) and ask it for each trial's verdict once the trial's final inputs are known.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gradleak.attacks.reconstruction import Status

# A loss above this many times its start counts as a blow-up. A trial that blew up and ended
# no better than its start diverged; one that blew up and recovered below its start is a
# normal result (L-BFGS keeps the best iterate, Adam may climb back down).
DIVERGENCE_FACTOR = 10.0


@dataclass(frozen=True)
class TrialStatus:
    """One trial's verdict: its status and, unless OK, why in one line."""

    status: Status
    reason: str = ""


OK = TrialStatus(Status.OK)


class TrialWatch:
    """Per trial: the loss at the start and the first blow-up (non-finite or far too large).

    Args:
        trials: how many trials are watched.
    """

    def __init__(self, trials: int) -> None:
        self.start: list[float | None] = [None] * trials
        self.blowup: list[str | None] = [None] * trials

    def see(self, trial: int, iteration: int, loss: float) -> None:
        """Record trial `trial`'s loss after `iteration` steps (its first call: the start)."""
        start = self.start[trial]
        if start is None:
            self.start[trial] = start = loss
        if self.blowup[trial] is not None:
            return
        if not math.isfinite(loss):
            self.blowup[trial] = f"loss {_spell(loss)} at iteration {iteration}"
        elif math.isfinite(start) and start > 0 and loss > DIVERGENCE_FACTOR * start:
            self.blowup[trial] = (
                f"loss rose to {loss / start:.3g}× its start at iteration {iteration}"
            )

    def verdict(
        self, trial: int, final: float, *, moved: bool, finite: bool, tolerance: float = 0.0
    ) -> TrialStatus:
        """The status of trial `trial`, whose returned inputs score `final`.

        Args:
            trial: the trial's index.
            final: the matching loss (the optimised one, prior included) of the inputs the
                trial returns.
            moved: the returned inputs differ from the trial's start.
            finite: the returned inputs (and soft labels) are all finite.
            tolerance: a final loss at most this is a success whatever else happened.

        Returns:
            NO_PROGRESS for a trial never evaluated (no start loss, no final loss: an
            interrupt came first); DIVERGED when the returned inputs or their loss are not
            finite, or when the loss
            blew up and the trial ended no better than its start; NO_PROGRESS when it ended
            no better than its start without blowing up, or never moved; OK otherwise.
        """
        start = self.start[trial]
        blowup = self.blowup[trial]
        if start is None and not math.isfinite(final):
            # Never evaluated (an interrupt before the first loss): nothing diverged.
            return TrialStatus(Status.NO_PROGRESS, "the trial was never evaluated")
        if not finite:
            return TrialStatus(Status.DIVERGED, blowup or "the inputs became non-finite")
        if not math.isfinite(final):
            return TrialStatus(Status.DIVERGED, blowup or f"final loss {_spell(final)}")
        if final <= tolerance:
            return OK
        improved = start is None or not math.isfinite(start) or final < start
        if improved and moved:
            return OK
        if blowup is not None:
            return TrialStatus(Status.DIVERGED, blowup)
        if not moved:
            return TrialStatus(Status.NO_PROGRESS, "the inputs never moved from their start")
        return TrialStatus(
            Status.NO_PROGRESS,
            f"the matching loss ended at {final:.4g}, not below its start {start:.4g}",
        )


def run_status(selected: TrialStatus, interrupted: bool, iterations: int) -> TrialStatus:
    """The status of a reconstruction: its kept trial's, unless Ctrl-C ended the run.

    A diverged result stays diverged (that is what the user must see first); otherwise an
    interrupted run is INTERRUPTED.

    Args:
        selected: the verdict of the trial that restart selection kept.
        interrupted: Ctrl-C ended the run.
        iterations: the steps taken when it ended.

    Returns:
        The reconstruction's status and its one-line reason.
    """
    if selected.status is Status.DIVERGED or not interrupted:
        return selected
    return TrialStatus(Status.INTERRUPTED, f"stopped by an interrupt after {iterations} iterations")


def _spell(value: float) -> str:
    return "NaN" if math.isnan(value) else ("+inf" if value > 0 else "-inf")
