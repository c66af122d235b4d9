"""Ctrl-C and SIGTERM reach a real `gradleak` process mid-run: it keeps its work and exits
as a shell expects (128 + the signal).

Each test starts the command in a subprocess, waits until the work has really started (a
marker on stderr or a file on disk), sends one signal and checks the exit code, the one
line that says what was kept, and that the results on disk are complete and loadable.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pytest
import torch
from PIL import Image

from gradleak.models import build_model, load_checkpoint, read_checkpoint_metadata

MARKER = "gradleak-test: attack running"
# The attack command prints nothing until it ends (without a terminal there is no progress
# bar), so the child announces on stderr when the engine first calls the evaluation side's
# observer: from then on a signal lands inside the optimisation loop. Everything else is
# the real command: its parser, its signal handling, its outputs.
ATTACK_CHILD = f"""
import sys

import gradleak.scenario.run as run
from gradleak.cli import main

observer_for = run.psnr_observer


def announcing(*args, **kwargs):
    observe = observer_for(*args, **kwargs)
    calls = 0

    def announce(iteration, losses, images):
        nonlocal calls
        calls += 1
        if calls == 2:  # the loop has stepped at least once
            print({MARKER!r}, file=sys.stderr, flush=True)
        return observe(iteration, losses, images)

    return announce


run.psnr_observer = announcing
sys.exit(main(sys.argv[1:]))
"""
SIGNALS = {"SIGINT": (signal.SIGINT, 130), "SIGTERM": (signal.SIGTERM, 143)}
TIMEOUT_S = 120  # generous: the machine may be busy; a healthy run takes a few seconds


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


class Child:
    """A `gradleak` subprocess whose stderr is read as it comes."""

    def __init__(self, argv: list[str], cwd: Path) -> None:
        self.process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.out_lines: list[str] = []
        self.err_lines: list[str] = []
        # Both pipes are drained as the child writes, so it never blocks on a full pipe.
        self._readers = [
            threading.Thread(target=_collect, args=(stream, lines), daemon=True)
            for stream, lines in (
                (self.process.stdout, self.out_lines),
                (self.process.stderr, self.err_lines),
            )
        ]
        for reader in self._readers:
            reader.start()

    def _join(self) -> None:
        for reader in self._readers:
            reader.join(5)

    def wait_until(self, ready: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + TIMEOUT_S
        while not ready():
            if self.process.poll() is not None:
                self._join()
                pytest.fail(f"the command ended before {what}: {self.err_lines}")
            if time.monotonic() > deadline:
                self.process.kill()
                pytest.fail(f"no {what} after {TIMEOUT_S} s: {self.err_lines}")
            time.sleep(0.02)

    def interrupt(self, signum: int) -> tuple[int, str, list[str]]:
        """Send `signum`; return the exit code, stdout and the stderr lines."""
        self.process.send_signal(signum)
        try:
            self.process.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise
        self._join()
        return self.process.returncode, "\n".join(self.out_lines), self.err_lines


def _collect(stream: IO[str] | None, lines: list[str]) -> None:
    assert stream is not None
    for line in stream:
        lines.append(line.rstrip("\n"))


def _no_partials(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if ".partial" in p.name or ".replaced" in p.name]


@pytest.mark.slow  # a fresh process imports torch: about 5 s, more on a busy machine
@pytest.mark.parametrize(
    ("name", "attack"),
    [("SIGINT", "dlg"), ("SIGTERM", "dlg"), ("SIGTERM", "ig")],
    ids=["sigint-lbfgs", "sigterm-lbfgs", "sigterm-adam"],
)
def test_an_interrupted_attack_writes_its_partial_results(
    tmp_path: Path, name: str, attack: str
) -> None:
    signum, code = SIGNALS[name]
    out = tmp_path / "run"
    argv = [sys.executable, "-c", ATTACK_CHILD, "attack", "--attack", attack]
    argv += ["--iterations", "100000", "--out", str(out), "--threads", "1", "--no-progress"]
    if attack == "ig":
        argv += ["--restarts", "1"]
    else:  # L-BFGS refuses a run its time bound says is too long: this one is cut short
        config = tmp_path / "unbounded.yaml"
        config.write_text("attack_options: {lbfgs_max_hours: 0}\n")
        argv += ["--config", str(config)]
    child = Child(argv, tmp_path)
    child.wait_until(lambda: MARKER in child.err_lines, "attack under way")
    returncode, stdout, err = child.interrupt(signum)

    assert returncode == code, err
    assert not any("Traceback" in line for line in err), err
    # Notices (e.g. the L-BFGS time estimate) may come first; the last line says what was kept.
    assert err[-1] == f"interrupted: partial results written to {out}", err
    assert not any("error" in line for line in err), err
    assert "PSNR" in stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["interrupted"] is True
    assert metrics.get("status", "interrupted") == "interrupted"
    assert 0 < metrics["iterations"] < 100000
    assert metrics["psnr"] is not None
    for picture in ("reconstruction.png", "grid.png"):  # the best candidate so far
        with Image.open(out / picture) as image:
            image.load()
            assert image.width > 0
    with (out / "history.csv").open(newline="") as handle:
        assert list(csv.DictReader(handle))
    assert (out / "config.yaml").is_file()
    assert _no_partials(tmp_path) == [] and _no_partials(out) == []


@pytest.mark.slow  # a fresh process imports torch: about 5 s, more on a busy machine
@pytest.mark.parametrize("name", list(SIGNALS))
def test_an_interrupted_training_keeps_its_last_complete_epoch(
    tmp_path: Path, image_folder: Path, name: str
) -> None:
    signum, code = SIGNALS[name]
    out = tmp_path / "ckpt" / "lenet.pt"
    argv = [sys.executable, "-m", "gradleak.cli", "train", "--model", "lenet"]
    argv += ["--dataset", "folder", "--data-root", str(image_folder), "--out", str(out)]
    argv += ["--epochs", "100000", "--save-epochs", "1", "--train-range", "0-5"]
    argv += ["--test-range", "6-7", "--batch-size", "3", "--threads", "1", "--no-progress"]
    child = Child(argv, tmp_path)
    # The state after epoch 1 is saved in place as soon as epoch 1 ends.
    child.wait_until(lambda: out.with_name("lenet.epoch1.pt").is_file(), "epoch 1 saved")
    returncode, _, err = child.interrupt(signum)

    assert returncode == code, err
    assert not any("Traceback" in line for line in err), err
    history = json.loads(out.with_name("lenet.json").read_text())
    assert history["interrupted"] is True
    last = history["epochs"][-1]["epoch"]
    assert 1 <= last < 100000
    assert err[-1] == f"interrupted: epoch {last} saved to {out}", err
    assert not any("error" in line for line in err), err
    metadata = read_checkpoint_metadata(out)
    assert metadata["interrupted"] is True and metadata["epoch"] == last
    model = build_model("lenet", num_classes=2, in_channels=3, image_size=(32, 32), seed=1)
    load_checkpoint(model, out)  # the project's loader takes it
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert _no_partials(out.parent) == []
