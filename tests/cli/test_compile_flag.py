"""`gradleak attack --compile auto|on|off` and `compile:` in config files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from gradleak.attacks.engine import compiling

from .running import cli_exit, one_line_error

pytestmark = pytest.mark.usefixtures("one_thread")

ARGV = ["attack", "--attack", "ig", "--iterations", "3", "--no-progress"]


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Compile records and inductor's cache go to the test's folder, not the user's."""
    monkeypatch.setenv("GRADLEAK_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "cache" / "compile" / "inductor"))


def test_auto_on_a_short_run_stays_eager_and_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_timing(*args: object) -> float:
        raise AssertionError("a run this short is decided without timing the step")

    monkeypatch.setattr(compiling, "time_eager_step", no_timing)
    out = tmp_path / "run"
    assert cli_exit([*ARGV, "--compile", "auto", "--out", str(out)]) == 0
    summary = capsys.readouterr().out.splitlines()[0]
    assert "3 iterations in" in summary and "compiling" not in summary
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["compiled"] is False
    assert metrics["compile_mode"] == "auto"
    assert metrics["compile_decision"] == (
        "auto: eager, 3 evaluations are too few to repay a compile"
    )
    assert (metrics["compile_cache_hits"], metrics["compile_cache_misses"]) == (0, 0)
    assert yaml.safe_load((out / "config.yaml").read_text())["attack"]["compile"] == "auto"


@pytest.mark.parametrize(("flag", "mode", "resolved"), [(["off"], "off", False), ([], "on", True)])
def test_on_and_off_are_recorded(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    flag: list[str],
    mode: str,
    resolved: bool,
) -> None:
    import torch

    def no_compiler(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no compiler in this test")

    monkeypatch.setattr(torch, "compile", no_compiler)  # `--compile` alone: on, falls back
    out = tmp_path / "run"
    assert cli_exit([*ARGV, "--compile", *flag, "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["compile_mode"] == mode
    assert metrics["compiled"] is False
    if mode == "on":
        assert metrics["compile_decision"].endswith("compiling failed, ran eagerly")
    assert yaml.safe_load((out / "config.yaml").read_text())["attack"]["compile"] is resolved


def test_an_unknown_compile_flag_is_one_line_and_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_exit([*ARGV, "--compile", "maybe", "--out", str(tmp_path / "run")]) == 2
    assert "--compile 'maybe' is not one of: on, off, auto" in one_line_error(capsys)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("value", "mode"), [("auto", "auto"), ("true", "on"), ("false", "off")])
def test_config_files_take_true_false_and_auto(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str, mode: str
) -> None:
    import torch

    def no_compiler(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no compiler in this test")

    monkeypatch.setattr(torch, "compile", no_compiler)  # true: on, falls back at once
    config = tmp_path / "run.yaml"
    config.write_text(f"attack: ig\nattack_options: {{iterations: 2, compile: {value}}}\n")
    out = tmp_path / "run"
    assert cli_exit(["attack", "--config", str(config), "--out", str(out), "--no-progress"]) == 0
    assert json.loads((out / "metrics.json").read_text())["compile_mode"] == mode


def test_a_config_file_with_another_compile_value_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("attack: ig\nattack_options: {compile: sometimes}\n")
    argv = ["attack", "--config", str(config), "--out", str(tmp_path / "run")]
    assert cli_exit(argv) == 2
    assert "compile 'sometimes' is not one of: on, off, auto" in one_line_error(capsys)


def test_the_summary_line_says_whether_the_compile_came_from_the_cache() -> None:
    from gradleak.cli.attack import _compiling

    run = {"compiled": True, "compile_seconds": 2.04, "compile_cache_hits": 1}
    assert _compiling(run) == " (2.0 s compiling, 1 cached graph)"
    assert _compiling({**run, "compile_cache_hits": 3}) == " (2.0 s compiling, 3 cached graphs)"
    assert _compiling({**run, "compile_cache_hits": 0}) == " (2.0 s compiling, cold cache)"
    assert _compiling({**run, "compiled": False}) == ""
