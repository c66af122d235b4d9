"""SIGTERM handled as Ctrl-C within `terminate_as_interrupt`, and the exit code of each."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from gradleak.cli.app import main
from gradleak.cli.exits import EXIT_INTERRUPTED
from gradleak.core.signals import Terminated, interrupt_exit_code, terminate_as_interrupt


def _wait_for_signal() -> None:
    # The handler runs between bytecodes, so a short loop receives it.
    for _ in range(1_000_000):
        pass
    pytest.fail("no signal arrived")


def test_sigterm_is_an_interrupt_and_recorded() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with terminate_as_interrupt() as interrupts:
        with pytest.raises(Terminated) as info:
            os.kill(os.getpid(), signal.SIGTERM)
            _wait_for_signal()
        assert isinstance(info.value, KeyboardInterrupt)  # kept wherever Ctrl-C keeps work
    assert interrupts.received == [signal.SIGTERM]
    assert interrupts.exit_code() == 143 == interrupt_exit_code(info.value)
    assert signal.getsignal(signal.SIGTERM) is before  # restored after the block


def test_ctrl_c_is_recorded_too() -> None:
    with terminate_as_interrupt() as interrupts:
        with pytest.raises(KeyboardInterrupt) as info:
            os.kill(os.getpid(), signal.SIGINT)
            _wait_for_signal()
        assert not isinstance(info.value, Terminated)
    assert interrupts.received == [signal.SIGINT]
    assert interrupts.exit_code() == 130 == interrupt_exit_code(info.value)


def test_an_interrupt_raised_in_code_exits_as_ctrl_c() -> None:
    with terminate_as_interrupt() as interrupts:
        pass
    assert interrupts.exit_code() == 130


def test_an_ignored_sigterm_stays_ignored() -> None:
    before = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with terminate_as_interrupt() as interrupts:
            os.kill(os.getpid(), signal.SIGTERM)  # ignored: nothing is raised
        assert interrupts.received == []
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, before)


def test_outside_the_main_thread_nothing_changes() -> None:
    seen = []

    def worker() -> None:
        with terminate_as_interrupt() as interrupts:
            seen.append(signal.getsignal(signal.SIGTERM))
        seen.append(interrupts.received)

    before = signal.getsignal(signal.SIGTERM)
    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == [before, []]


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_command_that_kept_its_work_exits_with_its_signal(
    monkeypatch: pytest.MonkeyPatch, signum: int, code: int
) -> None:
    import gradleak.cli.report as report

    def kept_after_signal(args: object) -> int:
        try:
            os.kill(os.getpid(), signum)
            _wait_for_signal()
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED  # what every command returns once its work is kept
        return 0

    monkeypatch.setattr(report, "handle", kept_after_signal)
    assert main(["report", "anywhere"]) == code


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_command_interrupted_before_any_result_exits_with_its_signal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], signum: int, code: int
) -> None:
    import gradleak.cli.report as report

    def interrupted(args: object) -> int:
        os.kill(os.getpid(), signum)
        _wait_for_signal()
        return 0

    monkeypatch.setattr(report, "handle", interrupted)
    assert main(["report", "anywhere"]) == code
    assert capsys.readouterr().err == "gradleak: interrupted before any result was produced\n"
