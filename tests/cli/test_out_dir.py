"""Output folders: an earlier run is never mixed into a new one (refused before any work
unless --overwrite, which replaces it whole), and a folder that cannot be written is
refused before any data is read, by every command that writes one."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import gradleak.scenario.run as run_module
from gradleak.core import files
from gradleak.training import trainer
from gradleak.training.trainer import TrainConfig, train_model

from .running import cli_exit, one_line_error

pytestmark = pytest.mark.usefixtures("one_thread")

MISSING = "/nonexistent/gradleak-data"


def _earlier_run(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text('{"attack": "earlier"}')
    (folder / "snapshot-of-the-earlier-run.png").write_text("")


def _beside(folder: Path) -> list[str]:
    """What lies beside `folder`: no hidden partial or replaced copies may stay."""
    return sorted(p.name for p in folder.parent.iterdir())


def _no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    def attacked(*parts: object) -> None:
        pytest.fail("the attack ran before --out was checked")

    monkeypatch.setattr(run_module, "execute", attacked)


def test_attack_refuses_an_earlier_run_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    _earlier_run(out)
    _no_work(monkeypatch)
    assert cli_exit(["attack", "--out", str(out), "--iterations", "1"]) == 2
    line = one_line_error(capsys)
    assert str(out) in line and "metrics.json" in line
    assert "add --overwrite" in line and "choose another --out" in line
    assert json.loads((out / "metrics.json").read_text()) == {"attack": "earlier"}


def test_attack_overwrite_replaces_the_earlier_run_whole(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    _earlier_run(out)
    argv = ["attack", "--out", str(out), "--iterations", "2", "--overwrite", "--no-progress"]
    assert cli_exit(argv) == 0
    assert f"outputs written to {out}" in capsys.readouterr().out
    assert not (out / "snapshot-of-the-earlier-run.png").exists()  # nothing of it is mixed in
    assert json.loads((out / "metrics.json").read_text())["attack"] == "dlg"
    assert _beside(out) == ["run"]


def test_an_attack_that_fails_to_write_keeps_the_earlier_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    _earlier_run(out)

    def disk_full(folder: Path, *parts: object) -> None:
        (folder / "grid.png").write_text("half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(run_module, "write_outputs", disk_full)
    argv = ["attack", "--out", str(out), "--iterations", "1", "--overwrite", "--no-progress"]
    assert cli_exit(argv) == 2
    assert "cannot write the run directory" in one_line_error(capsys)
    assert sorted(p.name for p in out.iterdir()) == [
        "metrics.json",
        "snapshot-of-the-earlier-run.png",
    ]
    assert _beside(out) == ["run"]


def test_an_interrupted_overwrite_leaves_the_interrupted_run_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    _earlier_run(out)
    real_observer = run_module.psnr_observer

    def interrupting(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        observe = real_observer(*args, **kwargs)  # type: ignore[arg-type]

        def once(iteration, losses, images):  # type: ignore[no-untyped-def]
            if iteration >= 2:
                raise KeyboardInterrupt
            return observe(iteration, losses, images)

        return once

    monkeypatch.setattr(run_module, "psnr_observer", interrupting)
    assert cli_exit(["attack", "--out", str(out), "--overwrite", "--no-progress"]) == 130
    assert f"partial results written to {out}" in capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["interrupted"] is True
    assert not (out / "snapshot-of-the-earlier-run.png").exists()
    assert _beside(out) == ["run"]


def test_default_run_directories_of_different_runs_differ(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    base = ["attack", "--iterations", "1", "--no-progress"]
    assert cli_exit(base) == 0
    assert cli_exit([*base, "--defense", "prune:0.5"]) == 0  # once overwrote the first
    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 2
    defenses = sorted(tuple(json.loads((r / "metrics.json").read_text())["defenses"]) for r in runs)
    assert defenses == [(), ("prune:0.5",)]
    capsys.readouterr()
    assert cli_exit(base) == 2  # the same settings name the same directory
    assert "add --overwrite" in one_line_error(capsys)


def _train(root: Path, **changes: object) -> TrainConfig:
    settings: dict[str, object] = {
        "model": "lenet",
        "dataset": "folder",
        "data_root": root,
        "train_range": (0, 5),
        "test_range": (6, 7),
        "batch_size": 3,
    }
    return TrainConfig(**{**settings, **changes})  # type: ignore[arg-type]


def _earlier_training(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("m.pt", "m.json", "m.epoch3.pt"):
        (folder / name).write_text("earlier")


def test_train_refuses_an_earlier_trainings_files_before_reading_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ckpt" / "m.pt"
    out.parent.mkdir()
    (out.parent / "m.epoch3.pt").write_text("earlier")  # any file of the set counts
    argv = ["train", "--model", "lenet", "--dataset", "folder", "--data-root", MISSING]
    assert cli_exit([*argv, "--out", str(out)]) == 2
    line = one_line_error(capsys)
    assert str(out) in line and "m.epoch3.pt" in line
    assert "add --overwrite" in line and "choose another --out" in line


def test_train_overwrite_replaces_the_earlier_set_whole(image_folder: Path) -> None:
    folder = image_folder.parent / "ckpt"
    _earlier_training(folder)
    (folder / "other.pt").write_text("someone else's")
    out = folder / "m.pt"
    result = train_model(
        _train(image_folder, save_epochs=(1,)), out, progress=False, overwrite=True
    )
    assert [c.path for c in result.checkpoints] == [folder / "m.epoch1.pt", out]
    assert sorted(p.name for p in folder.iterdir()) == ["m.epoch1.pt", "m.json", "m.pt", "other.pt"]
    assert json.loads((folder / "m.json").read_text())["epochs"][0]["epoch"] == 1


def test_a_training_that_fails_keeps_the_earlier_set(
    image_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = image_folder.parent / "ckpt"
    _earlier_training(folder)

    def fails(*parts: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(trainer, "_record", fails)
    with pytest.raises(OSError):
        train_model(_train(image_folder), folder / "m.pt", progress=False, overwrite=True)
    assert sorted(p.name for p in folder.iterdir()) == ["m.epoch3.pt", "m.json", "m.pt"]
    assert all(p.read_text() == "earlier" for p in folder.iterdir())


def test_compare_resumes_only_a_comparison_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cmp"
    _earlier_run(out)
    argv = ["compare", "--dataset", f"mnist={MISSING}", "--out", str(out)]
    assert cli_exit(argv) == 2  # refused before the images are looked for
    line = one_line_error(capsys)
    assert str(out) in line and "no compare.json" in line and "add --overwrite" in line


@pytest.mark.parametrize(
    ("command", "argv"),
    [
        ("simulate", ["simulate", "--dataset", "mnist", "--data-root", MISSING]),
        ("labels", ["labels", "--model", "lenet", "--dataset", "mnist", "--data-root", MISSING]),
        ("tradeoff", ["tradeoff", f"{MISSING}/spec.yaml"]),
    ],
)
def test_other_commands_refuse_an_earlier_run_before_reading_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, argv: list[str]
) -> None:
    out = tmp_path / command
    _earlier_run(out)
    assert cli_exit([*argv, "--out", str(out)]) == 2
    line = one_line_error(capsys)
    assert str(out) in line and "add --overwrite" in line and "choose another --out" in line


def _commands_writing_under(locked: Path) -> list[list[str]]:
    """Every command that writes a folder, writing under `locked`, with data that is missing:
    the folder must be refused first."""
    return [
        ["attack", "--dataset", "mnist", "--data-root", MISSING, "--out", str(locked / "a")],
        ["train", "--model", "lenet", "--dataset", "mnist", "--data-root", MISSING]
        + ["--out", str(locked / "m.pt")],
        ["compare", "--dataset", f"mnist={MISSING}", "--out", str(locked / "c")],
        ["simulate", "--dataset", "mnist", "--data-root", MISSING, "--out", str(locked / "s")],
        ["labels", "--model", "lenet", "--dataset", "mnist", "--data-root", MISSING]
        + ["--out", str(locked / "l")],
        ["tradeoff", f"{MISSING}/spec.yaml", "--out", str(locked / "t")],
        ["report", str(locked)],
    ]


def _refused_first(locked: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in _commands_writing_under(locked):
        assert cli_exit(argv) == 2, argv
        line = one_line_error(capsys)
        assert str(locked) in line and "not writable" in line, (argv, line)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_refused_before_any_data_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        _refused_first(locked, capsys)
    finally:
        locked.chmod(0o700)


def test_a_folder_without_write_permission_is_refused_before_any_data_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The same check where permissions cannot block (root): the folder reads as read-only.
    locked = tmp_path / "locked"
    locked.mkdir()
    access = os.access

    def no_write_in_locked(path: object, mode: int, **kwargs: object) -> bool:
        if Path(str(path)) == locked and mode & os.W_OK:
            return False
        return access(path, mode, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(files.os, "access", no_write_in_locked)
    _refused_first(locked, capsys)
