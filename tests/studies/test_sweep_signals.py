"""`gradleak sweep` stopped by Ctrl-C or SIGTERM mid-cell, in a real process: the finished
cells are summarised, no half cell is left or counted, the lock is released, and the same
command finishes the rest.

The sweep runs through a small launcher that holds every cell past image 0 at a gate before
its attack, so the signal always finds a cell running; the launcher also gates the cells of
spawned worker processes, which import it as their main module.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gradleak.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

LAUNCHER = """\
import os
import sys
import time

import gradleak.scenario.run as run

_real = run.run_attack


def _gated(config):
    gate = os.environ["SWEEP_GATE"]
    if config.indices[0] > 0 and not os.path.exists(gate):
        open(f"{gate}.{config.indices[0]}", "w").close()  # this cell is running
        while not os.path.exists(gate):
            time.sleep(0.02)
    return _real(config)


run.run_attack = _gated

if __name__ == "__main__":
    from gradleak.cli import main

    sys.exit(main(sys.argv[1:]))
"""

SPEC = """\
name: signals
attacks: [idlg]
images: [0, 1, 2]
options: {idlg: {iterations: 2}}
"""
# How long the sweep may take to reach its gate on a busy machine.
WAIT_SECONDS = 180


def _wait_for(paths: list[Path], process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not all(path.exists() for path in paths):
        if process.poll() is not None:
            raise AssertionError(f"the sweep ended early: {process.communicate()}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"the sweep never reached {paths}: {process.communicate()}")
        time.sleep(0.05)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize(
    ("signum", "workers", "to_group"),
    [
        pytest.param(signal.SIGINT, 1, False, id="ctrl-c"),
        pytest.param(signal.SIGTERM, 1, False, id="sigterm"),
        pytest.param(
            signal.SIGTERM, 2, False, id="sigterm-to-the-parent-of-workers", marks=pytest.mark.slow
        ),
        pytest.param(
            signal.SIGTERM, 2, True, id="sigterm-to-every-process-as-slurm", marks=pytest.mark.slow
        ),
        pytest.param(
            signal.SIGINT, 2, True, id="ctrl-c-in-a-terminal-with-workers", marks=pytest.mark.slow
        ),
    ],
)
def test_a_signal_mid_cell_keeps_the_finished_cells_and_a_rerun_finishes(
    tmp_path: Path, signum: signal.Signals, workers: int, to_group: bool
) -> None:
    spec, out, gate = tmp_path / "spec.yaml", tmp_path / "sweep", tmp_path / "gate"
    spec.write_text(SPEC)
    launcher = tmp_path / "launch_sweep.py"
    launcher.write_text(LAUNCHER)
    argv = [sys.executable, str(launcher), "sweep", str(spec), "--out", str(out)]
    argv += ["--no-progress", "--threads", "1", "--workers", str(workers)]
    env = {**os.environ, "SWEEP_GATE": str(gate), "OMP_NUM_THREADS": "1"}
    sweep = subprocess.Popen(
        argv,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Its own process group either way, so a failed test can end the sweep and its
        # workers; the signal under test still goes to the parent alone unless `to_group`.
        start_new_session=True,
    )
    try:
        first_done = out / "cells" / "idlg__lenet__none__fedsgd__img0__s0"
        running = [first_done, Path(f"{gate}.1")] + ([Path(f"{gate}.2")] if workers > 1 else [])
        _wait_for(running, sweep)
        if to_group:
            os.killpg(sweep.pid, signum)
        else:
            sweep.send_signal(signum)
        stdout, stderr = sweep.communicate(timeout=WAIT_SECONDS)
    finally:
        if sweep.poll() is None:  # the test failed: leave no sweep behind
            os.killpg(sweep.pid, signal.SIGKILL)
            sweep.communicate()

    assert sweep.returncode == 128 + signum, stderr
    assert "Traceback" not in stderr, stderr
    assert "interrupted: 1 of 3 cells done; run the same command again to finish" in stderr
    assert "| idlg | lenet | none | fedsgd | 1 |" in (out / "summary.md").read_text()
    assert "| idlg | lenet | none | fedsgd | 1 |" in stdout
    assert [row["image"] for row in _rows(out / "results.csv")] == ["0"]
    assert [path.name for path in (out / "cells").iterdir()] == [first_done.name]
    assert (out / "sweep.lock").read_text() == ""

    gate.touch()
    argv = ["sweep", str(spec), "--out", str(out), "--no-progress", "--threads", "1"]
    assert main(argv) == 0
    assert [row["image"] for row in _rows(out / "results.csv")] == ["0", "1", "2"]
