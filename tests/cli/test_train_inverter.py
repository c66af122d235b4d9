"""`gradleak train-inverter`, and `gradleak attack --attack learned:INV.pt` end to end."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

import gradleak.training.inverter as training
from gradleak.attacks.priors.inverter import load_inverter

from .running import cli_exit, one_line_error

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--sketch-dim", "128", "--hidden", "64", "--updates", "16", "--epochs", "2"]


def _train_args(folder: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train-inverter",
        "--model",
        "lenet",
        "--dataset",
        "folder",
        "--data-root",
        str(folder),
        "--image-size",
        "8",
        "--range",
        "0-7",
        *TINY,
        "--out",
        str(out),
        "--no-progress",
        "--threads",
        "1",
        *extra,
    ]


def _attack_args(folder: Path, attack: str, out: Path, *extra: str) -> list[str]:
    return [
        "attack",
        "--attack",
        attack,
        "--model",
        "lenet",
        "--dataset",
        "folder",
        "--data-root",
        str(folder),
        "--image-size",
        "8",
        "--out",
        str(out),
        "--no-progress",
        *extra,
    ]


def test_train_then_attack_end_to_end(
    image_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inv = tmp_path / "inv.pt"
    assert cli_exit(_train_args(image_folder, inv)) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith(f"saved {inv}: inverter for lenet (fingerprint")
    assert "16 updates" in out[0] and "2 epochs" in out[0]
    assert load_inverter(inv).epochs == 2

    run = tmp_path / "run"
    assert cli_exit(_attack_args(image_folder, f"learned:{inv}", run, "--index", "3")) == 0
    printed = capsys.readouterr().out
    assert f"learned:{inv} on lenet" in printed and "0 iterations" in printed
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["attack"] == f"learned:{inv}" and metrics["iterations"] == 0
    assert metrics["status"] == "ok" and metrics["psnr"] is not None
    assert (run / "reconstruction.png").is_file()


def test_the_default_run_directory_is_named_by_the_inverter_file(
    image_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inv = tmp_path / "inverters" / "my-inv.pt"
    assert cli_exit(_train_args(image_folder, inv)) == 0
    monkeypatch.chdir(tmp_path)
    args = _attack_args(image_folder, f"learned:{inv}", tmp_path)
    args = args[: args.index("--out")] + args[args.index("--out") + 2 :]
    assert cli_exit(args) == 0
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name.startswith("learned-my-inv-lenet-folder-0-b1-s0-")


def test_a_missing_inverter_is_one_line(
    image_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.pt"
    code = cli_exit(_attack_args(image_folder, f"learned:{missing}", tmp_path / "run"))
    assert code == 2
    assert f"inverter file not found: {missing}" in one_line_error(capsys)
    assert not (tmp_path / "run").exists()


def test_learned_without_a_path_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_exit(["attack", "--attack", "learned"]) == 2
    assert "needs its PATH: --attack learned:PATH" in one_line_error(capsys)


def test_an_inverter_of_another_setting_is_refused(
    image_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inv = tmp_path / "inv.pt"
    assert cli_exit(_train_args(image_folder, inv)) == 0
    capsys.readouterr()
    args = _attack_args(image_folder, f"learned:{inv}", tmp_path / "run", "--batch-size", "2")
    assert cli_exit(args) == 2
    line = one_line_error(capsys)
    assert "was trained for lenet" in line and "but the batch size is 2" in line
    assert "gradleak train-inverter" in line


def test_list_and_help_show_the_learned_attack(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_exit(["list"]) == 0
    listed = capsys.readouterr().out
    assert "learned:PATH" in listed and "train-inverter" in listed
    assert cli_exit(["attack", "--help"]) == 0
    assert "learned:PATH: Learned inversion" in capsys.readouterr().out
    assert cli_exit(["train-inverter", "--help"]) == 0
    assert "--sketch-dim" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--range", "0-99"], "range 0-99 goes past"),
        (["--protocol", "fedadmm"], "invalid choice: 'fedadmm'"),
        (["--local-steps", "2"], "use --protocol fedavg"),
        (["--epochs", "0"], "epochs must be an integer of at least 1"),
        (["--threads", "0"], "--threads must be at least 1"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    image_folder: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    fragment: str,
) -> None:
    assert cli_exit(_train_args(image_folder, tmp_path / "inv.pt", *extra)) == 2
    assert fragment in one_line_error(capsys)
    assert not (tmp_path / "inv.pt").exists()


def test_an_existing_inverter_needs_overwrite(
    image_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inv = tmp_path / "inv.pt"
    inv.write_bytes(b"earlier")
    assert cli_exit(_train_args(image_folder, inv)) == 2
    assert "already exists; add --overwrite" in one_line_error(capsys)
    assert cli_exit(_train_args(image_folder, inv, "--overwrite")) == 0
    assert load_inverter(inv).epochs == 2


def test_ctrl_c_exits_130_and_keeps_the_last_epoch(
    image_folder: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_save = training.save_inverter

    def save_then_interrupt(inverter: object, path: Path) -> Path:
        saved = real_save(inverter, path)  # type: ignore[arg-type]
        # Ctrl-C while epoch 1 is being saved: held until the save is whole, then acted on.
        signal.raise_signal(signal.SIGINT)
        return saved

    monkeypatch.setattr(training, "save_inverter", save_then_interrupt)
    inv = tmp_path / "inv.pt"
    assert cli_exit(_train_args(image_folder, inv)) == 130
    assert "interrupted: epoch 1 kept at" in capsys.readouterr().err
    assert load_inverter(inv).epochs == 1


def test_ctrl_c_before_any_epoch_writes_nothing(
    image_folder: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def interrupt(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "simulate", interrupt)
    inv = tmp_path / "inv.pt"
    assert cli_exit(_train_args(image_folder, inv)) == 130
    assert "no epoch completed, nothing written" in capsys.readouterr().err
    assert not inv.exists()
