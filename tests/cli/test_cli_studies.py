"""The `gradleak sweep`, `report` and `bench` commands."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import gradleak.studies.sweep.runner as sweep_module

from .running import cli_exit, one_line_error

pytestmark = pytest.mark.usefixtures("one_thread")

SPEC = """\
name: cli
attacks: [idlg]
defenses: [none, "prune:0.5"]
images: [0, 1]
options: {idlg: {iterations: 2}}
"""


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC)
    return path


def test_sweep_runs_then_resumes_and_reports(
    spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sweep"
    assert cli_exit(["sweep", str(spec), "--out", str(out), "--no-progress", "--threads", "1"]) == 0
    stdout = capsys.readouterr().out
    assert "4 cells: 4 run now, 0 already done" in stdout
    assert "| idlg | lenet | prune:0.5 | fedsgd | 2 |" in stdout
    assert cli_exit(["sweep", str(spec), "--out", str(out), "--no-progress"]) == 0
    assert "4 cells: 0 run now, 4 already done" in capsys.readouterr().out

    assert cli_exit(["report", str(out)]) == 0
    assert f"report written to {out / 'report.html'}" in capsys.readouterr().out
    cell = out / "cells" / "idlg__lenet__none__fedsgd__img0__s0"
    assert cli_exit(["report", str(cell)]) == 0
    html = (cell / "report.html").read_text()
    assert "snapshots/" not in html  # images are embedded, not linked
    assert json.loads((cell / "metrics.json").read_text())["attack"] == "idlg"


def test_interrupted_sweep_exits_130_and_says_how_to_finish(
    spec: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    real = sweep_module.run_cell
    calls = []

    def interrupt_second(job):  # type: ignore[no-untyped-def]
        calls.append(job)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(job)

    monkeypatch.setattr(sweep_module, "run_cell", interrupt_second)
    out = tmp_path / "sweep"
    assert cli_exit(["sweep", str(spec), "--out", str(out), "--no-progress"]) == 130
    captured = capsys.readouterr()
    assert "interrupted: 1 of 4 cells done; run the same command again" in captured.err
    assert "Traceback" not in captured.err


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["report", "/nonexistent/run"], "/nonexistent/run"),
        (["bench", "nope"], "unknown study 'nope'"),
        (["bench", "ig-resnet20-4-cifar10"], "needs the dataset files: pass --data-root"),
        (["bench", "dlg-lenet-cifar100", "--count", "0", "--data-root", "x"], "--count"),
        (["attack", "--defense", "prune:2"], "prune fraction must be in [0, 1), got 2"),
        (["attack", "--defense", "blur:3"], "unknown defense 'blur'"),
    ],
)
def test_bad_study_input_is_one_line(
    args: list[str], fragment: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_exit([*args, *(["--out", str(tmp_path / "o")] if args[0] == "attack" else [])]) == 2
    assert fragment in one_line_error(capsys)


@pytest.mark.enable_socket  # the Ray address probe connects to the loopback interface
@pytest.mark.allow_hosts(["127.0.0.1"])
def test_bad_sweep_flags_are_one_line(
    spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "o")
    assert cli_exit(["sweep", str(spec), "--out", out, "--address", "127.0.0.1:9"]) == 2
    assert "--address is for --backend ray" in one_line_error(capsys)
    assert cli_exit(["sweep", str(spec), "--out", out, "--workers", "0"]) == 2
    assert "--workers must be at least 1" in one_line_error(capsys)
    too_many = str(4 * (os.cpu_count() or 1) + 1)
    assert cli_exit(["sweep", str(spec), "--out", out, "--workers", too_many]) == 2
    assert f"--workers {too_many} is more local processes" in one_line_error(capsys)
    pytest.importorskip("ray", reason="the Ray backend is the optional extra gradleak[ray]")
    argv = ["sweep", str(spec), "--out", out, "--backend", "ray", "--address", "127.0.0.1:9"]
    assert cli_exit(argv) == 2
    assert "cannot reach the Ray cluster at 127.0.0.1:9" in one_line_error(capsys)


def test_bench_list_names_every_study(capsys: pytest.CaptureFixture[str]) -> None:
    from gradleak.studies.sweep.benches import BENCHES

    assert cli_exit(["bench", "list"]) == 0
    out = capsys.readouterr().out
    for name in BENCHES:
        assert name in out


def test_a_sweep_whose_cells_failed_exits_1_and_a_rerun_retries_them(
    spec: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import gradleak.scenario.run as run_module
    from gradleak.core.errors import GradleakError

    real = run_module.run_attack

    def failing(config):  # type: ignore[no-untyped-def]
        if config.indices == (1,) and config.defenses:
            raise GradleakError("the data went away")
        return real(config)

    monkeypatch.setattr(run_module, "run_attack", failing)
    argv = ["sweep", str(spec), "--out", str(tmp_path / "sweep"), "--no-progress"]
    assert cli_exit(argv) == 1
    captured = capsys.readouterr()
    assert "4 cells: 4 run now, 0 already done, 1 failed;" in captured.out
    assert "__img1__s0: the data went away" in captured.out  # summary.md lists it
    assert "1 of 4 cells failed (reasons in" in captured.err
    assert "run the same command again to retry them" in captured.err
    monkeypatch.undo()
    assert cli_exit(argv) == 0
    assert "4 cells: 1 run now, 3 already done;" in capsys.readouterr().out


def test_a_sweep_refuses_a_cell_that_cannot_run_and_a_folder_in_use_in_one_line(
    spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import os
    import socket

    bad = tmp_path / "bad.yaml"
    bad.write_text(SPEC.replace("images: [0, 1]", "images: [0, 8]"))
    assert cli_exit(["sweep", str(bad), "--out", str(tmp_path / "a")]) == 2
    assert "image 8 lies past the end of bundled CIFAR-10" in one_line_error(capsys)

    out = tmp_path / "held"
    out.mkdir()
    holder = {"pid": os.getppid(), "host": socket.gethostname(), "started": "earlier"}
    (out / "sweep.lock").write_text(json.dumps(holder))
    assert cli_exit(["sweep", str(spec), "--out", str(out)]) == 2
    assert f"in use by another sweep, pid {os.getppid()}" in one_line_error(capsys)
