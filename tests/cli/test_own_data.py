"""`gradleak attack` on the user's own data: tensor files, image lists and --normalize."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gradleak.data.tensors import load_tensor_file

from .running import cli_exit, one_line_error

IMAGES = np.random.default_rng(0).integers(0, 256, (4, 3, 7, 5), dtype=np.uint8)
LABELS = np.array([2, 0, 1, 2])
QUICK = ["--attack", "idlg", "--iterations", "2", "--model", "lenet", "--no-progress"]


def _metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def test_attack_on_a_tensor_file_with_auto_statistics(tmp_path: Path) -> None:
    path = tmp_path / "x.npz"
    np.savez(path, images=IMAGES, labels=LABELS)
    out = tmp_path / "run"
    argv = ["attack", "--dataset", "tensors", "--data-root", str(path), "--normalize", "auto"]
    assert cli_exit([*argv, *QUICK, "--index", "1", "--out", str(out), "--threads", "1"]) == 0
    metrics = _metrics(out)
    threat = metrics["threat_model"]
    # The statistics the attacker is told: those of all four images at the model's size.
    images = torch.stack([load_tensor_file(path, (32, 32), 3)[i][0] for i in range(4)])
    pixels = images.transpose(0, 1).reshape(3, -1).double()
    assert threat["dataset"] == "auto" and threat["data_shape"] == [3, 32, 32]
    assert threat["num_classes"] == 3
    assert np.allclose(threat["mean"], pixels.mean(dim=1).tolist(), rtol=0, atol=1e-9)
    assert np.allclose(threat["std"], pixels.std(dim=1, correction=0).tolist(), rtol=0, atol=1e-9)
    assert metrics["source"] == f"tensor file {path}, indices 1"


def test_attack_on_an_image_list_with_given_statistics(tmp_path: Path) -> None:
    for i in range(2):
        Image.fromarray(IMAGES[i].transpose(1, 2, 0)).save(tmp_path / f"{i}.png")
    (tmp_path / "faces.csv").write_text("path,label\n0.png,bob\n1.png,ann\n")
    out = tmp_path / "run"
    argv = ["attack", "--dataset", "list", "--data-root", str(tmp_path / "faces.csv")]
    argv += ["--normalize", "0.5,0.4,0.3/0.2,0.25,0.3", "--image-size", "16"]
    assert cli_exit([*argv, *QUICK, "--out", str(out), "--threads", "1"]) == 0
    threat = _metrics(out)["threat_model"]
    assert threat["dataset"] == "custom" and threat["data_shape"] == [3, 16, 16]
    assert threat["mean"] == [0.5, 0.4, 0.3] and threat["std"] == [0.2, 0.25, 0.3]
    assert threat["num_classes"] == 2


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "has 4 images but 2 labels"),
        (["--normalize", "mnist"], "statistics for 1 channel(s) but the images have 3"),
        (["--normalize", "0.5/0"], "every std must be positive"),
        (["--normalize", "bogus"], "--normalize 'bogus' is not known"),
    ],
)
def test_bad_data_or_normalize_is_exit_2_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    path = tmp_path / "x.npz"
    np.savez(path, images=IMAGES, labels=LABELS[:2])
    argv = ["attack", "--dataset", "tensors", "--data-root", str(path), *QUICK, *extra]
    assert cli_exit([*argv, "--out", str(tmp_path / "run")]) == 2
    assert message in one_line_error(capsys)
    assert not (tmp_path / "run").exists()  # refused before any work
