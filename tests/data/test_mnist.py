"""MNIST idx loader against hand-built idx files and the real test set."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from gradleak.core.errors import GradleakError
from gradleak.data import load_dataset, load_mnist
from gradleak.data.mnist import read_idx


def _idx(magic: int, array: np.ndarray) -> bytes:
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write(path: Path, payload: bytes, gz: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


def _mnist(root: Path, prefix: str, images: np.ndarray, labels: np.ndarray, gz: bool) -> None:
    folder = root / "mnist"
    _write(folder / f"{prefix}-images-idx3-ubyte", _idx(2051, images), gz)
    _write(folder / f"{prefix}-labels-idx1-ubyte", _idx(2049, labels), gz)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_exact_pixels_and_labels(tmp_path: Path, gz: bool) -> None:
    images = np.random.default_rng(0).integers(0, 256, size=(3, 28, 28), dtype=np.uint8)
    images[1, 3, 20] = 255  # row 3, column 20
    labels = np.array([7, 0, 9], dtype=np.uint8)
    _mnist(tmp_path, "t10k", images, labels, gz)

    source = load_mnist(tmp_path)
    assert source.images.shape == (3, 1, 28, 28)
    assert np.array_equal(source.images[:, 0].numpy(), images)
    assert int(source.images[1, 0, 3, 20]) == 255
    assert source.labels.dtype == torch.int64
    assert source.labels.tolist() == [7, 0, 9]
    assert source.class_names == tuple(str(d) for d in range(10))
    x, y = source[2]
    assert y == 9 and x.dtype == torch.float32 and x.shape == (1, 28, 28)
    assert torch.equal(x, torch.from_numpy(images[2]).float().div(255).unsqueeze(0))


def test_mnist_root_may_be_the_folder_and_train_split(tmp_path: Path) -> None:
    images = np.arange(2 * 28 * 28, dtype=np.int64).reshape(2, 28, 28) % 256
    _mnist(tmp_path, "train", images, np.array([1, 2]), gz=False)
    source = load_mnist(tmp_path / "mnist", split="train")
    assert source.labels.tolist() == [1, 2]
    assert np.array_equal(source.images[:, 0].numpy(), images)


def test_mnist_bad_magic_names_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "mnist"
    images = np.zeros((2, 28, 28), dtype=np.uint8)
    # Images written with the labels' magic: the header says 1 dimension, not 3.
    bad = _write(folder / "t10k-images-idx3-ubyte", _idx(2049, images), gz=True)
    _write(folder / "t10k-labels-idx1-ubyte", _idx(2049, np.zeros(2)), gz=True)
    with pytest.raises(GradleakError, match="magic number 2049, expected 2051") as err:
        load_mnist(tmp_path)
    assert str(bad) in str(err.value)


def test_mnist_truncated_and_mismatched_files(tmp_path: Path) -> None:
    path = tmp_path / "x-idx3-ubyte"
    path.write_bytes(_idx(2051, np.zeros((2, 28, 28)))[:-1])
    with pytest.raises(GradleakError, match="promises 1568"):
        read_idx(path, 2051)
    path.write_bytes(b"\x00\x00")
    with pytest.raises(GradleakError, match="too short"):
        read_idx(path, 2051)
    gz = tmp_path / "y-idx1-ubyte.gz"
    gz.write_bytes(b"not gzip at all")
    with pytest.raises(GradleakError, match="not a valid gzip file"):
        read_idx(gz, 2049)

    _mnist(tmp_path, "t10k", np.zeros((2, 28, 28)), np.zeros(3), gz=False)
    with pytest.raises(GradleakError, match="2 images but .* 3 labels"):
        load_mnist(tmp_path)


def test_mnist_missing_files_name_path_and_expected_names(tmp_path: Path) -> None:
    (tmp_path / "mnist").mkdir()
    with pytest.raises(GradleakError) as err:
        load_mnist(tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "mnist") in msg
    assert "t10k-images-idx3-ubyte[.gz]" in msg and "t10k-labels-idx1-ubyte[.gz]" in msg
    with pytest.raises(GradleakError, match="choose one of test, train"):
        load_mnist(tmp_path, split="dev")


def test_real_mnist_test_set(shared_data: Path) -> None:
    source = load_mnist(shared_data)
    assert len(source) == 10000
    assert source.images.shape == (10000, 1, 28, 28)
    assert int(source.labels.min()) == 0 and int(source.labels.max()) == 9
    assert source[0][1] == 7
    # Every digit occurs roughly 1000 times in the official test set.
    counts = torch.bincount(source.labels, minlength=10)
    assert int(counts.sum()) == 10000 and int(counts.min()) > 800
    assert load_dataset("mnist", shared_data)[0][1] == 7
    with pytest.raises(GradleakError, match="train-images-idx3-ubyte"):
        load_mnist(shared_data, split="train")
