"""The user's own model (`--model FILE.py:FACTORY`, `--model-arg`) through the commands."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from .running import cli_exit, one_line_error

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "faces_model.py"
FACES = f"{EXAMPLE}:make_model"
QUICK = ["--attack", "idlg", "--iterations", "2", "--no-progress", "--threads", "1"]
FACTORIES = """
from torch import nn

def fixed(num_classes=3):
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 64 * 64, num_classes))

def one_logit():
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 1))

def broken():
    raise ValueError("no such width")

def not_a_module():
    return 42

NUMBER = 7
"""


@pytest.fixture
def faces(tmp_path: Path) -> Path:
    """Three people, two tiny photos each (20×24, so every size is a resize)."""
    root = tmp_path / "faces"
    rng = np.random.default_rng(0)
    for person in ("ada", "bob", "cy"):
        (root / person).mkdir(parents=True)
        for i in range(2):
            pixels = rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / person / f"{i}.png")
    return root


@pytest.fixture
def factories(tmp_path: Path) -> Path:
    path = tmp_path / "factories.py"
    path.write_text(textwrap.dedent(FACTORIES))
    return path


def _metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def test_attack_on_a_factory_model_end_to_end(faces: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = ["attack", "--model", FACES, "--model-arg", "width=8", "--dataset", "folder"]
    argv += ["--data-root", str(faces), "--index", "3", "--out", str(out), *QUICK]
    assert cli_exit(argv) == 0
    metrics = _metrics(out)
    threat = metrics["threat_model"]
    assert metrics["model"] == FACES and metrics["model_args"] == {"width": 8}
    # The model's own input and classes, not the folder's three people.
    assert threat["data_shape"] == [3, 32, 32] and threat["num_classes"] == 30
    assert metrics["label_accuracy"] == 1.0


def test_folder_images_are_read_at_the_size_the_model_takes(faces: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = ["attack", "--model", FACES, "--model-arg", "width=4", "--model-arg", "image_size=16"]
    argv += ["--model-arg", "num_classes=3", "--dataset", "folder", "--data-root", str(faces)]
    assert cli_exit([*argv, "--out", str(out), *QUICK]) == 0
    threat = _metrics(out)["threat_model"]
    assert threat["data_shape"] == [3, 16, 16] and threat["num_classes"] == 3


def test_a_module_on_the_path_and_the_default_run_folder(
    faces: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "user_faces_mod_c.py").write_text(EXAMPLE.read_text())
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    argv = ["attack", "--model", "user_faces_mod_c:make_model", "--model-arg", "width=2"]
    assert cli_exit([*argv, "--dataset", "folder", "--data-root", str(faces), *QUICK]) == 0
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name.startswith("idlg-user_faces_mod_c.make_model-folder-0-b1-s0-")


def test_the_same_seed_gives_the_same_run(faces: Path, tmp_path: Path) -> None:
    argv = ["attack", "--model", FACES, "--model-arg", "width=4", "--dataset", "folder"]
    argv += ["--data-root", str(faces), "--seed", "3", *QUICK]
    assert cli_exit([*argv, "--out", str(tmp_path / "a")]) == 0
    assert cli_exit([*argv, "--out", str(tmp_path / "b")]) == 0
    first, second = _metrics(tmp_path / "a"), _metrics(tmp_path / "b")
    assert first["psnr"] == second["psnr"] and first["mse"] == second["mse"]


@pytest.mark.parametrize(
    ("model", "args", "says"),
    [
        ("surely_missing_pkg_z:make", [], "cannot import module 'surely_missing_pkg_z'"),
        ("{f}:missing", [], "has no attribute 'missing'"),
        ("{f}:NUMBER", [], "'NUMBER' in "),
        ("{f}:broken", [], "raised ValueError: no such width"),
        ("{f}:not_a_module", [], "returned a value of type int, not a torch nn.Module"),
        ("{f}:one_logit", [], "gives a torch.float32 tensor of shape 2×1"),
        ("{f}:fixed", ["--model-arg", "depth=2"], "cannot be called with depth=2"),
        ("{f}:fixed", ["--model-arg", "width"], "--model-arg 'width' is not KEY=VALUE"),
        ("{f}:fixed", ["--model-arg", "w=1", "--model-arg", "w=2"], "given twice"),
        ("lenet", ["--model-arg", "width=2"], "but 'lenet' is a built-in model"),
        ("{f}:fixed", [], "takes 3×64×64 images, but cifar10's are 3×32×32 and are not resized"),
        (
            "{f}:fixed",
            ["--image-size", "32", "--dataset", "folder", "--data-root", "{d}"],
            "takes 3×64×64 images, not 3×32×32 (--image-size 32); use --image-size 64",
        ),
        (
            "{f}:fixed",
            [
                "--model-arg",
                "num_classes=2",
                "--dataset",
                "folder",
                "--data-root",
                "{d}",
                "--index",
                "4",
            ],
            "labels reach 2 but the model {f}:fixed outputs only 2 classes",
        ),
        (
            "{f}:fixed",
            ["--dataset", "folder", "--data-root", "{d}", "--num-classes", "5"],
            "--num-classes 5 differs from the 3 classes model",
        ),
    ],
)
def test_each_bad_model_is_one_line_and_exit_code_2(
    faces: Path,
    factories: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    model: str,
    args: list[str],
    says: str,
) -> None:
    def fill(text: str) -> str:
        return text.replace("{f}", str(factories)).replace("{d}", str(faces))

    argv = ["attack", "--model", fill(model), *map(fill, args), "--out", str(tmp_path / "o")]
    assert cli_exit([*argv, *QUICK]) == 2
    assert fill(says) in one_line_error(capsys)
    assert not (tmp_path / "o").exists()


def test_train_then_attack_the_trained_state(
    faces: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    checkpoint = tmp_path / "faces.pt"
    model = ["--model", FACES, "--model-arg", "width=4"]
    data = ["--dataset", "folder", "--data-root", str(faces)]
    train = ["train", *model, *data, "--epochs", "1", "--batch-size", "3", "--no-progress"]
    assert cli_exit([*train, "--out", str(checkpoint)]) == 0
    metadata = torch.load(checkpoint, weights_only=True)["metadata"]
    assert metadata["model"] == FACES and metadata["model_args"] == {"width": 4}
    assert metadata["num_classes"] == 30 and metadata["image_size"] == [32, 32]
    attack = ["attack", *data, "--checkpoint", str(checkpoint), *QUICK]
    assert cli_exit([*attack, *model, "--out", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    # Same shapes, another model: the recorded arguments tell them apart.
    other = [*model, "--model-arg", "activation=sigmoid"]
    assert cli_exit([*attack, *other, "--out", str(tmp_path / "other")]) == 2
    assert "with model_args {'width': 4}, not {'width': 4, 'activation': 'sigmoid'}" in (
        one_line_error(capsys)
    )


def test_train_refuses_labels_beyond_the_classes(
    faces: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "--model", FACES, "--model-arg", "num_classes=2", "--dataset", "folder"]
    argv += ["--data-root", str(faces), "--batch-size", "2", "--no-progress"]
    assert cli_exit([*argv, "--out", str(tmp_path / "m.pt")]) == 2
    assert "labels reach 2 but the model" in one_line_error(capsys)
    assert not (tmp_path / "m.pt").exists()


def test_a_sweep_over_factory_models_and_their_arguments(faces: Path, tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        textwrap.dedent(
            f"""
            attacks: [idlg]
            models:
              - {FACES}
              - {{model: {FACES}, model_args: {{width: 2, activation: sigmoid}}}}
            base: {{dataset: folder, data_root: {faces}, attack_options: {{iterations: 2}}}}
            images: [1]
            """
        )
    )
    out = tmp_path / "sweep"
    assert cli_exit(["sweep", str(spec), "--out", str(out), "--no-progress"]) == 0
    cells = sorted((out / "cells").iterdir())
    assert len(cells) == 2
    assert {_metrics(cell)["model"] for cell in cells} == {FACES}
    runs = [yaml.safe_load((cell / "config.yaml").read_text())["run"] for cell in cells]
    assert sorted(str(run["model_args"]) for run in runs) == [
        "{'width': 2, 'activation': 'sigmoid'}",
        "{}",
    ]
    text = (out / "summary.md").read_text()
    assert f"{FACES} width=2 activation=sigmoid" in text


def test_a_sweep_refuses_a_bad_model_entry_with_its_line(
    faces: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"attacks: [idlg]\nmodels:\n  - lenet\n  - {{model: {FACES}, width: 2}}\n")
    assert cli_exit(["sweep", str(spec), "--out", str(tmp_path / "s"), "--no-progress"]) == 2
    line = one_line_error(capsys)
    assert f"{spec}, line 4: models entry sets 'width'" in line


def test_a_grey_model_reads_the_folder_as_grey_images(faces: Path, tmp_path: Path) -> None:
    # The example model with in_channels=1: the RGB photos are read as grey, at its 32×32.
    out = tmp_path / "grey"
    argv = ["attack", "--model", FACES, "--model-arg", "in_channels=1", "--model-arg"]
    argv += ["num_classes=3", "--dataset", "folder", "--data-root", str(faces)]
    assert cli_exit([*argv, "--out", str(out), *QUICK]) == 0
    metrics = _metrics(out)
    assert metrics["threat_model"]["data_shape"] == [1, 32, 32]
    # The statistics of grey photos: the photo statistics averaged over the channels.
    assert len(metrics["threat_model"]["mean"]) == 1
    audit = tmp_path / "audit"
    argv = ["audit", "--model", FACES, "--model-arg", "in_channels=1", "--model-arg"]
    argv += ["num_classes=3", "--data", str(faces), "--attacks", "labels,ig", "--iterations"]
    argv += ["3", "--samples", "2", "--budget", "60s", "--out", str(audit), "--no-progress"]
    assert cli_exit(argv) == 0
    record = json.loads((audit / "audit.json").read_text())
    assert {a["attack"]: a["status"] for a in record["attacks"]}["ig"] == "ran"
