"""CIFAR loaders against the official pickle layout and the real test batches."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from gradleak.core.errors import GradleakError
from gradleak.data import load_cifar10, load_cifar100, load_dataset


def _write(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Protocol 2 with bytes keys is what the official (Python 2) files contain.
    with path.open("wb") as f:
        pickle.dump(obj, f, protocol=2)


def _rows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3072), dtype=np.uint8)


def _cifar10(root: Path, split_files: dict[str, int], meta: bool = True) -> dict[str, tuple]:
    """Write a tiny cifar-10-batches-py under root; return {file: (rows, labels)}."""
    folder = root / "cifar-10-batches-py"
    written = {}
    for k, (name, n) in enumerate(split_files.items()):
        rows, labels = _rows(n, k), [(k + i) % 10 for i in range(n)]
        _write(folder / name, {b"batch_label": b"x", b"data": rows, b"labels": labels})
        written[name] = (rows, labels)
    if meta:
        names = [f"class{i}".encode() for i in range(10)]
        _write(folder / "batches.meta", {b"label_names": names, b"num_vis": 3072})
    return written


def test_cifar10_plane_order_and_labels(tmp_path: Path) -> None:
    # Row layout: 1024 red values, then 1024 green, then 1024 blue, each row-major 32×32.
    row = np.zeros(3072, dtype=np.uint8)
    row[:1024] = np.arange(1024) % 256
    row[1024:2048] = 7
    row[2048:] = 200
    row[1024 + 32 * 2 + 5] = 99  # green, y=2, x=5
    folder = tmp_path / "cifar-10-batches-py"
    _write(folder / "test_batch", {b"data": row[None, :], b"labels": [4]})

    source = load_cifar10(tmp_path)
    assert len(source) == 1
    assert source.images.dtype == torch.uint8
    assert source.images.shape == (1, 3, 32, 32)
    img = source.images[0]
    assert img[0, 0, :5].tolist() == [0, 1, 2, 3, 4]
    assert int(img[0, 1, 0]) == 32  # second row of the red plane
    assert int(img[1, 2, 5]) == 99
    assert int(img[1, 0, 0]) == 7 and int(img[2, 31, 31]) == 200
    x, y = source[0]
    assert y == 4 and x.dtype == torch.float32
    assert torch.equal(x, img.float() / 255)


def test_cifar10_exact_pixels_and_default_class_names(tmp_path: Path) -> None:
    written = _cifar10(tmp_path, {"test_batch": 5}, meta=False)
    source = load_cifar10(tmp_path / "cifar-10-batches-py")  # the folder itself works too
    rows, labels = written["test_batch"]
    assert np.array_equal(source.images.reshape(5, -1).numpy(), rows)
    assert source.labels.tolist() == labels
    assert source.class_names == tuple(str(i) for i in range(10))


def test_cifar10_train_concatenates_batches_in_order(tmp_path: Path) -> None:
    files = {f"data_batch_{i}": i for i in range(1, 6)}
    written = _cifar10(tmp_path, files)
    source = load_cifar10(tmp_path, split="train")
    assert len(source) == 15
    expected = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)])
    assert np.array_equal(source.images.reshape(15, -1).numpy(), expected)
    assert source.class_names[3] == "class3"


def test_cifar10_missing_train_names_path_and_files(tmp_path: Path) -> None:
    _cifar10(tmp_path, {"test_batch": 2, "data_batch_1": 2})
    with pytest.raises(GradleakError) as err:
        load_cifar10(tmp_path, split="train")
    msg = str(err.value)
    assert str(tmp_path / "cifar-10-batches-py") in msg
    assert "missing data_batch_2, data_batch_3, data_batch_4, data_batch_5" in msg
    assert "data_batch_1" in msg and "\n" not in msg


def test_cifar10_missing_folder_and_bad_split(tmp_path: Path) -> None:
    with pytest.raises(GradleakError, match="test_batch"):
        load_cifar10(tmp_path)
    with pytest.raises(GradleakError, match="does not exist"):
        load_cifar10(tmp_path / "nowhere")
    with pytest.raises(GradleakError, match="choose one of test, train"):
        load_cifar10(tmp_path, split="validation")


def test_cifar_refuses_pickles_that_run_code(tmp_path: Path) -> None:
    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(tmp_path / "pwned"),))

    _write(tmp_path / "cifar-10-batches-py" / "test_batch", {b"data": Payload()})
    with pytest.raises(GradleakError, match="not a valid CIFAR pickle"):
        load_cifar10(tmp_path)
    assert not (tmp_path / "pwned").exists()


def test_cifar_rejects_corrupt_and_malformed_batches(tmp_path: Path) -> None:
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.parent.mkdir()
    path.write_bytes(b"\x80\x02garbage")
    with pytest.raises(GradleakError, match="test_batch"):
        load_cifar10(tmp_path)
    _write(path, {b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]})
    with pytest.raises(GradleakError, match="uint8"):
        load_cifar10(tmp_path)
    _write(path, {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]})
    with pytest.raises(GradleakError, match="1 entries for 2 images"):
        load_cifar10(tmp_path)


def test_cifar100_fine_and_coarse(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    rows = _rows(3, 1)
    _write(
        folder / "test",
        {b"data": rows, b"fine_labels": [99, 0, 42], b"coarse_labels": [19, 0, 5]},
    )
    _write(
        folder / "meta",
        {
            b"fine_label_names": [f"f{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"c{i}".encode() for i in range(20)],
        },
    )
    fine = load_cifar100(tmp_path)
    assert fine.labels.tolist() == [99, 0, 42]
    assert len(fine.class_names) == 100 and fine.class_names[42] == "f42"
    assert np.array_equal(fine.images.reshape(3, -1).numpy(), rows)
    coarse = load_cifar100(folder, label="coarse")
    assert coarse.labels.tolist() == [19, 0, 5]
    assert coarse.class_names[19] == "c19"
    with pytest.raises(GradleakError, match="fine, coarse"):
        load_cifar100(tmp_path, label="medium")
    with pytest.raises(GradleakError, match="missing train"):
        load_cifar100(tmp_path, split="train")


def test_real_cifar10_test_batch(shared_data: Path) -> None:
    source = load_cifar10(shared_data)
    assert len(source) == 600
    assert source.images.shape == (600, 3, 32, 32)
    assert source.labels.min() >= 0 and source.labels.max() <= 9
    x, y = source[0]
    assert y == 3 and source.class_names[y] == "cat"
    assert x.shape == (3, 32, 32) and 0.0 <= float(x.min()) <= float(x.max()) <= 1.0
    via_registry = load_dataset("cifar10", shared_data / "cifar-10-batches-py")
    assert torch.equal(via_registry[599][0], source[599][0])


def test_real_cifar100_test(shared_data: Path) -> None:
    fine = load_cifar100(shared_data)
    coarse = load_cifar100(shared_data, label="coarse")
    assert len(fine) == len(coarse) == 600
    assert fine.images.shape == (600, 3, 32, 32)
    assert int(fine.labels.min()) >= 0 and int(fine.labels.max()) <= 99
    assert int(coarse.labels.min()) >= 0 and int(coarse.labels.max()) <= 19
    assert len(fine.class_names) == 100 and len(coarse.class_names) == 20
    assert torch.equal(fine.images, coarse.images)


def test_real_data_has_no_train_split(shared_data: Path) -> None:
    with pytest.raises(GradleakError, match="data_batch_1") as err:
        load_cifar10(shared_data, split="train")
    assert "cifar-10-batches-py" in str(err.value)
    with pytest.raises(GradleakError, match="missing train"):
        load_cifar100(shared_data, split="train")
