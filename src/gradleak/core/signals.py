"""Termination requests as interrupts: SIGTERM (sent by `timeout`, `kill`, Slurm and
Kubernetes) is handled like Ctrl-C, so every place that keeps its work on Ctrl-C keeps it
on SIGTERM too, with no second code path.

Within `terminate_as_interrupt` SIGTERM raises `Terminated`, a KeyboardInterrupt, and both
signals are recorded, so that the command can exit as a shell expects of a process ended by
that signal: 128 + the signal's number, 130 after Ctrl-C and 143 after SIGTERM. A second
signal while the first is being handled is an interrupt as well. The handlers are installed
only in the main thread, only where the signal has its default handling (a signal the
parent chose to ignore stays ignored), and restored when the block ends, so library callers
and test processes keep their own handling outside it.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C's KeyboardInterrupt would be (and caught with it)."""


@dataclass
class Interrupts:
    """The interrupting signals received within `terminate_as_interrupt`, in order."""

    received: list[signal.Signals] = field(default_factory=list)

    def exit_code(self) -> int:
        """128 + the first signal received (SIGINT if none was: an interrupt raised in code)."""
        first = self.received[0] if self.received else signal.SIGINT
        return 128 + int(first)


# While results whose work is done are scored and written, an interrupt would throw them
# away: between `hold_interrupts` and `release_interrupts` the signals are recorded here
# instead of raised, and the command ends with the signal's exit code once they are written.
_held: list[signal.Signals] | None = None


def hold_interrupts() -> None:
    """From now on, SIGINT and SIGTERM within `terminate_as_interrupt` are recorded, not
    raised, until `release_interrupts`: the work is done and only its results are being
    kept, which an interrupt would lose."""
    global _held
    if _held is None:
        _held = []


def release_interrupts() -> list[signal.Signals]:
    """End `hold_interrupts`; the signals that arrived meanwhile, in order."""
    global _held
    held, _held = _held or [], None
    return held


def _raising(interrupts: Interrupts) -> Callable[[int, FrameType | None], None]:
    def handle(signum: int, frame: FrameType | None) -> None:
        received = signal.Signals(signum)
        interrupts.received.append(received)
        if _held is not None:
            _held.append(received)
            return
        if received == signal.SIGTERM:
            raise Terminated(f"signal {received.name}")
        raise KeyboardInterrupt

    return handle


# What each signal's handling is when nobody changed it: only then is it taken over.
_DEFAULT_HANDLING = {
    signal.SIGINT: signal.default_int_handler,
    signal.SIGTERM: signal.SIG_DFL,
}


@contextmanager
def terminate_as_interrupt() -> Iterator[Interrupts]:
    """Within the block, SIGTERM raises `Terminated` and SIGINT KeyboardInterrupt, and both
    are recorded.

    Outside the main thread (where Python cannot install handlers) the block changes
    nothing and records nothing.

    Yields:
        The record of the signals received, for the exit code.
    """
    interrupts = Interrupts()
    if threading.current_thread() is not threading.main_thread():
        yield interrupts
        return
    handler = _raising(interrupts)
    previous = {}
    for signum, default in _DEFAULT_HANDLING.items():
        if signal.getsignal(signum) is default:
            previous[signum] = signal.signal(signum, handler)
    try:
        yield interrupts
    finally:
        for signum, before in previous.items():
            signal.signal(signum, before)


def interrupt_exit_code(exc: BaseException) -> int:
    """The exit code a shell reports for the signal behind `exc`: 143 for SIGTERM, else 130."""
    return 128 + int(signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT)
