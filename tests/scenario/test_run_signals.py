"""A signal that arrives once the attack has ended waits until its results are written."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

import gradleak.scenario.run as run
from gradleak.cli import main
from gradleak.core.signals import terminate_as_interrupt
from gradleak.scenario import RunConfig, run_attack

pytestmark = pytest.mark.usefixtures("one_thread")


def _config(out: Path) -> RunConfig:
    return RunConfig(out=out, attack_options={"iterations": 5}, progress=False)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_the_results_are_written_keeps_them_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, signum: signal.Signals
) -> None:
    write = run.write_outputs

    def signalled_write(*args: Any) -> None:
        os.kill(os.getpid(), signum)  # e.g. `timeout` expiring just as the attack ended
        write(*args)

    monkeypatch.setattr(run, "write_outputs", signalled_write)
    out = tmp_path / "run"
    with terminate_as_interrupt() as interrupts:
        result = run_attack(_config(out))
    assert interrupts.received == [signum]
    assert result.interrupted_while_writing and not result.reconstruction.interrupted
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["iterations"] == 5 and (out / "grid.png").is_file()


def test_the_command_ends_with_the_signal_after_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    write = run.write_outputs

    def signalled_write(*args: Any) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        write(*args)

    monkeypatch.setattr(run, "write_outputs", signalled_write)
    out = tmp_path / "run"
    argv = ["attack", "--iterations", "5", "--out", str(out), "--no-progress", "--threads", "1"]
    assert main(argv) == 143
    assert f"interrupted: the finished results were written to {out}" in capsys.readouterr().err
    assert (out / "metrics.json").is_file()
