"""`gradleak attack` says in its summary line when the result is no attack result, and
refuses L-BFGS runs whose time estimate is beyond the bound before any work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import gradleak.attacks.gradient_matching as gradient_matching

from .running import cli_exit, one_line_error

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_diverged_attack_is_reported_in_the_summary_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "diverge.yaml"
    options = {"line_search": "none", "lr": 1e6, "iterations": 20, "init": "randn"}
    config.write_text(yaml.safe_dump({"attack_options": options}))
    out = tmp_path / "run"

    code = cli_exit(
        ["attack", "--attack", "dlg", "--config", str(config), "--out", str(out), "--no-progress"]
    )

    assert code == 0
    summary = capsys.readouterr().out.splitlines()[0]
    assert "DIVERGED (loss rose to" in summary
    assert "the scores are of the random start, not an attack result" in summary
    assert "PSNR" in summary
    assert json.loads((out / "metrics.json").read_text())["status"] == "diverged"


def test_a_normal_attack_line_has_no_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert cli_exit(["attack", "--iterations", "3", "--out", str(out), "--no-progress"]) == 0
    summary = capsys.readouterr().out.splitlines()[0]
    assert summary.startswith("dlg on lenet (") and "): PSNR " in summary


def test_too_many_lbfgs_restarts_are_refused_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # 10 ms a trial in every stacked evaluation (stacking saves nothing here): 50 trials ×
    # 300 steps × 25 evaluations is over an hour.
    monkeypatch.setattr(
        gradient_matching, "measure_evaluation_seconds", lambda _p, images, _i: 0.01 * len(images)
    )
    out = tmp_path / "run"

    code = cli_exit(["attack", "--restarts", "50", "--out", str(out), "--no-progress"])

    assert code == 2
    line = one_line_error(capsys)
    assert line.startswith("gradleak: error: L-BFGS: 50 trials in 1 stack of 50")
    assert "--restarts 48 or fewer" in line
    assert not (out / "metrics.json").exists()
