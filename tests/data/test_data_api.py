"""The image-source protocol, batching, and the load_dataset registry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gradleak.core.errors import GradleakError
from gradleak.data import ArrayImageSource, ImageSource, load_dataset, stack


def _source() -> ArrayImageSource:
    images = torch.arange(4 * 3 * 2 * 2, dtype=torch.int64).reshape(4, 3, 2, 2).to(torch.uint8)
    return ArrayImageSource(images, [0, 1, 2, 1], ("a", "b", "c"))


def test_array_source_access() -> None:
    source = _source()
    assert isinstance(source, ImageSource)
    assert len(source) == 4
    x, y = source[2]
    assert y == 2 and isinstance(y, int)
    assert x.dtype == torch.float32
    assert torch.equal(x, source.images[2].float() / 255)
    assert int(source.images[2, 0, 0, 0]) == 24  # access does not modify the stored bytes


def test_out_of_range_names_valid_range() -> None:
    source = _source()
    for bad in (4, -1):
        with pytest.raises(GradleakError, match=r"valid indices: 0\.\.3"):
            source[bad]
    assert source[np.int64(1)][1] == 1


def test_stack() -> None:
    source = _source()
    images, labels = stack(source, [3, 0, 3])
    assert images.shape == (3, 3, 2, 2) and images.dtype == torch.float32
    assert labels.dtype == torch.int64 and labels.tolist() == [1, 0, 1]
    assert torch.equal(images[1], source[0][0])
    with pytest.raises(GradleakError, match="of 4 images"):
        stack(source, [0, 9])
    with pytest.raises(GradleakError, match="at least one"):
        stack(source, [])


class _ListSource:
    """A minimal protocol implementation, to check stack's generic path."""

    class_names = ("x", "y")

    def __init__(self) -> None:
        self.items = [(torch.full((1, 2, 2), 0.25 * i), i % 2) for i in range(3)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.items[i]


def test_stack_generic_source() -> None:
    images, labels = stack(_ListSource(), [2, 1])
    assert images[:, 0, 0, 0].tolist() == [0.5, 0.25] and labels.tolist() == [0, 1]
    with pytest.raises(GradleakError, match="of 3 images"):
        stack(_ListSource(), [3])


def test_array_source_validation() -> None:
    with pytest.raises(GradleakError, match="uint8"):
        ArrayImageSource(torch.zeros(2, 3, 4, 4), [0, 1], ("a", "b"))
    with pytest.raises(GradleakError, match="one label per image"):
        ArrayImageSource(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), [0], ("a", "b"))
    with pytest.raises(GradleakError, match="0..1"):
        ArrayImageSource(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), [0, 2], ("a", "b"))


def test_load_dataset_errors(tmp_path: Path) -> None:
    for name in ("cifar10", "cifar100", "mnist"):
        with pytest.raises(GradleakError, match="--data-root DIR is required"):
            load_dataset(name, None)
    with pytest.raises(GradleakError, match="cifar10, cifar100, mnist, folder"):
        load_dataset("svhn", tmp_path)
    with pytest.raises(GradleakError, match="not resized"):
        load_dataset("cifar10", tmp_path, size=(64, 64))
    with pytest.raises(GradleakError, match="1 channel"):
        load_dataset("mnist", tmp_path, channels=3)
    with pytest.raises(GradleakError, match="t10k-images-idx3-ubyte"):
        load_dataset("mnist", tmp_path, size=(28, 28), channels=1)
