"""The benchmark scripts still run against the library, at a budget of seconds.

The reproductions themselves run for minutes to hours and are not part of the suite; these
runs only prove that each script's code paths still fit the library's API.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _run(*argv: str) -> str:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / argv[0]), *argv[1:]],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.parametrize("mode", ["floor", "many"])
def test_engine_speed_runs(mode: str) -> None:
    out = _run(
        "engine_speed.py",
        mode,
        "--models",
        "lenet",
        "--trials",
        "1",
        "--iterations",
        "2",
        "--min-iterations",
        "1",
        "--rounds",
        "1",
        "--threads",
        "1",
    )
    assert "Measured on" in out


def test_idlg_labels_runs(shared_data: Path) -> None:
    out = _run("idlg_labels.py", "--count", "2", "--data-root", str(shared_data))
    assert '"correct": 2' in out


@pytest.mark.parametrize(
    "script",
    sorted(
        p.name for p in BENCHMARKS.glob("*.py") if p.name not in ("perf_report.py", "selection.py")
    ),
)
def test_every_benchmark_parses_its_arguments(script: str) -> None:
    assert "usage:" in _run(script, "--help")
