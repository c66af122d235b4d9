"""The `gradleak` command: help, bad input as one line with exit code 2, Ctrl-C, a real run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

import gradleak.scenario.run as run_module

from .running import cli_exit, one_line_error

pytestmark = pytest.mark.usefixtures("one_thread")


# --- help -------------------------------------------------------------------------------------


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_exit(["--help"]) == 0
    out = capsys.readouterr().out
    assert "usage: gradleak" in out
    assert "attack" in out and "list" in out


def test_no_command_prints_help_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_exit([]) == 2
    assert "usage: gradleak" in capsys.readouterr().out


def test_attack_help_lists_attacks_and_models(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_exit(["attack", "--help"]) == 0
    out = capsys.readouterr().out
    attacks = "dlg,idlg,dlg-admm,idlg-admm,analytic,spear,imprint,ig,rgap,tokens,dlg-text,tag,span"
    assert "{" + attacks + "}" in out
    for model in ("lenet", "convnet[-W]", "resnet20[-K]", "resnet56[-K]"):
        assert model in out
    assert "{cifar10,cifar100,mnist,folder,list,tensors}" in out


def test_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_exit(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("dlg", "idlg", "ig", "lenet", "resnet20[-K]", "cifar100", "mnist"):
        assert name in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    import gradleak

    assert cli_exit(["--version"]) == 0
    assert gradleak.__version__ in capsys.readouterr().out


# --- bad input: one line on stderr, exit code 2 -----------------------------------------------


@pytest.fixture
def png(tmp_path: Path) -> Path:
    path = tmp_path / "x.png"
    Image.new("RGB", (40, 30), (10, 200, 30)).save(path)
    return path


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--attack", "gan"], ["invalid choice: 'gan'", "dlg", "idlg", "ig"]),
        (["--model", "vgg11"], ["unknown model 'vgg11'", "lenet"]),
        (["--dataset", "svhn"], ["invalid choice: 'svhn'", "cifar10"]),
        (
            ["--dataset", "cifar10", "--data-root", "/nonexistent/data"],
            ["/nonexistent/data", "cifar-10-batches-py"],
        ),
        (["--batch-size", "9"], ["batch size 9 is larger than the 8 images"]),
        (["--index", "8"], ["image index 8 is out of range"]),
        (["--iterations", "0"], ["iterations must be positive and finite, got 0"]),
        (["--lr", "-1"], ["lr must be positive"]),
        (["--iterations", "many"], ["invalid int value: 'many'"]),
        (["--bogus-flag"], ["unrecognized arguments: --bogus-flag"]),
        (["--batch-size", "2", "--attack", "idlg"], ["needs single_sample"]),
        (["--label-strategy", "known"], ["needs labels"]),
        (["--threads", "0"], ["--threads must be at least 1, got 0"]),
        (["--stop-psnr", "-3"], ["--stop-psnr must be a positive number of dB, got -3"]),
        (
            ["--attack", "ig", "--restarts", "10000000", "--iterations", "1"],
            ["10000000 trials would need about", "GiB is free", "use fewer restarts"],
        ),
    ],
)
def test_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], fragments: list[str]
) -> None:
    out = tmp_path / "run"
    assert cli_exit(["attack", *args, "--out", str(out)]) == 2
    line = one_line_error(capsys)
    for fragment in fragments:
        assert fragment in line
    assert not (out / "metrics.json").exists()


def test_missing_dataset_files_name_path_and_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    assert cli_exit(["attack", "--dataset", "cifar10", "--data-root", str(root)]) == 2
    line = one_line_error(capsys)
    assert str(root) in line and "test_batch" in line


def test_undecodable_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    assert cli_exit(["attack", "--image", str(garbage), "--out", str(tmp_path / "o")]) == 2
    line = one_line_error(capsys)
    assert str(garbage) in line and "could not be decoded" in line


def test_missing_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_exit(["attack", "--image", str(tmp_path / "absent.png")]) == 2
    assert "does not exist" in one_line_error(capsys)


def test_label_outside_classes(png: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_exit(["attack", "--image", str(png), "--label", "50"]) == 2
    line = one_line_error(capsys)
    assert "label 50 is outside the 10 classes" in line


@pytest.mark.parametrize(
    ("text", "key"),
    [("bogus: 1\n", "'bogus'"), ("attack_options: {momentum: 0.9}\n", "'momentum'")],
)
def test_config_with_unknown_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, key: str
) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(text)
    assert cli_exit(["attack", "--config", str(config), "--out", str(tmp_path / "o")]) == 2
    line = one_line_error(capsys)
    assert f"unknown key {key}" in line


def test_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_exit(["attack", "--config", str(tmp_path / "absent.yaml")]) == 2
    assert "config file not found" in one_line_error(capsys)


# --- runs -------------------------------------------------------------------------------------


def test_flags_and_config_file_reach_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("attack: ig\nseed: 4\nattack_options: {restarts: 3, lr: 0.2}\n")
    out = tmp_path / "run"
    argv = ["attack", "--config", str(config), "--iterations", "3", "--restarts", "2"]
    argv += ["--tv", "0.01", "--labels-known", "--index", "6", "--out", str(out), "--no-progress"]
    assert cli_exit(argv) == 0
    stdout = capsys.readouterr().out
    assert "ig on lenet" in stdout and "PSNR" in stdout
    assert f"outputs written to {out}" in stdout

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["attack"] == "ig" and metrics["seed"] == 4
    assert metrics["iterations"] == 3 and metrics["restarts"] == 2
    assert metrics["label_strategy"] == "known"  # auto with labels granted
    assert metrics["threat_model"]["labels_known"] is True
    assert metrics["true_labels"] == [1]  # bundled image 6
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["attack"]["lr"] == 0.2  # from the file
    assert resolved["attack"]["restarts"] == 2  # the flag wins
    assert resolved["attack"]["tv_weight"] == 0.01
    assert resolved["run"]["progress"] is False


def test_stop_psnr_ends_the_attack_once_the_target_is_reached(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert cli_exit(["attack", "--stop-psnr", "20", "--out", str(out), "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["stopped_at_psnr"] == 20
    assert metrics["interrupted"] is False
    assert metrics["psnr"] >= 20
    # DLG's full run takes far more steps than reaching 20 dB does.
    assert metrics["iterations"] < 100
    history = (out / "history.csv").read_text().strip().splitlines()
    psnr_column = history[0].split(",").index("psnr")
    assert float(history[-1].split(",")[psnr_column]) >= 20


def test_compile_that_fails_falls_back_with_one_notice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    def no_compiler(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("no working C compiler\nmore detail")

    monkeypatch.setattr(torch, "compile", no_compiler)
    out = tmp_path / "run"
    argv = ["attack", "--attack", "ig", "--iterations", "4", "--restarts", "2", "--labels-known"]
    assert cli_exit([*argv, "--compile", "--out", str(out), "--no-progress"]) == 0
    captured = capsys.readouterr()
    notices = [line for line in captured.err.splitlines() if line.strip()]
    assert notices == [
        "notice: --compile is not available here (RuntimeError: no working C compiler); "
        "running uncompiled"
    ]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["compiled"] is False and metrics["compile_seconds"] == 0
    assert metrics["iterations"] == 4
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["attack"]["compile"] is True


def test_keyboard_interrupt_writes_partial_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_observer = run_module.psnr_observer
    seen: list[int] = []

    def interrupting_observer(case, stop_at=None, **kwargs):  # type: ignore[no-untyped-def]
        observe = real_observer(case, stop_at, **kwargs)
        fired = False

        def wrapped(iteration, losses, images):  # type: ignore[no-untyped-def]
            nonlocal fired
            seen.append(iteration)
            if iteration >= 3 and not fired:
                fired = True  # one Ctrl-C
                raise KeyboardInterrupt
            return observe(iteration, losses, images)

        return wrapped

    monkeypatch.setattr(run_module, "psnr_observer", interrupting_observer)
    out = tmp_path / "run"

    assert cli_exit(["attack", "--out", str(out)]) == 130

    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert "interrupted" in captured.err
    assert "PSNR" in captured.out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["interrupted"] is True
    assert metrics["iterations"] < 300
    assert metrics["iterations"] == max(seen)
    for name in ("reconstruction.png", "grid.png", "history.csv", "config.yaml"):
        assert (out / name).is_file()


def test_keyboard_interrupt_before_any_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(*parts):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    monkeypatch.setattr(run_module, "case_from", interrupted)
    assert cli_exit(["attack", "--out", str(tmp_path / "run")]) == 130
    assert "interrupted before any result" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def _console_script() -> Path:
    script = Path(sys.executable).with_name("gradleak")
    if script.is_file():
        return script
    found = shutil.which("gradleak")
    if found is None:
        pytest.skip("the gradleak console script is not installed (pip install -e .)")
    return Path(found)


def test_console_script_default_attack(tmp_path: Path) -> None:
    """`gradleak attack` with only --out: DLG on LeNet against a bundled CIFAR-10 image."""
    out = tmp_path / "run"
    env = dict(os.environ)
    # One intra-op thread: the default attack runs thousands of tiny kernels, and on a busy
    # two-core machine spin-waiting OpenMP threads make it many times slower.
    env.setdefault("OMP_NUM_THREADS", "1")
    done = subprocess.run(
        [str(_console_script()), "attack", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "dlg on lenet (bundled CIFAR-10 test images, indices 0)" in done.stdout
    assert "PSNR" in done.stdout and f"outputs written to {out}" in done.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["attack"], metrics["model"], metrics["dataset"]) == ("dlg", "lenet", "cifar10")
    assert metrics["interrupted"] is False
    assert metrics["psnr"] >= 30.0  # the default run recovers the image
    assert metrics["label_accuracy"] == 1.0
    for name in ("reconstruction.png", "grid.png", "history.csv", "config.yaml"):
        assert (out / name).is_file()


def test_out_that_is_a_file_is_refused_before_the_attack(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "taken"
    blocker.write_text("")
    assert cli_exit(["attack", "--out", str(blocker)]) == 2
    assert "is a file, not a directory" in one_line_error(capsys)
    assert cli_exit(["attack", "--out", str(blocker / "run")]) == 2
    assert "cannot create the run directory" in one_line_error(capsys)
