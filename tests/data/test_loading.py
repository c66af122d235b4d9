"""Opening a dataset by name: bundled fallback, statistics, descriptions and index errors."""

from __future__ import annotations

import pickle
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gradleak.core.errors import GradleakError
from gradleak.data import (
    FOLDER_IMAGE_SIZE,
    PHOTO_STATS,
    get_dataset_spec,
    input_shape,
    open_images,
)

# Published per-channel statistics, written out so the test does not read them from the code.
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
PHOTO_MEAN, PHOTO_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _by_hand(pixels: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 H×W×C pixels normalised channel by channel: (x / 255 - mean) / std."""
    x = pixels.astype(np.float64) / 255.0
    normalised = (x - np.array(mean)) / np.array(std)
    return torch.from_numpy(normalised.transpose(2, 0, 1)).float()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Two classes of 40×48 images of one colour each: 'blue' first, then 'red'."""
    root = tmp_path / "photos"
    for name, colour in (("red", (255, 0, 128)), ("blue", (0, 64, 255))):
        (root / name).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (48, 40), colour).save(root / name / f"{i}.png")
    return root


def test_cifar10_without_a_root_is_the_bundled_test_images() -> None:
    images = open_images("cifar10", None)
    assert len(images) == 8 and images.num_classes == 10
    assert images.description == "bundled CIFAR-10 test images"
    assert images.describe([0, 1]) == "bundled CIFAR-10 test images, indices 0, 1"
    assert images.stats == get_dataset_spec("cifar10")
    assert (images.channels, images.size) == (3, (32, 32))
    assert images.class_names[3] == "cat"
    pixels, labels = images.pixels([0, 3])
    assert pixels.shape == (2, 3, 32, 32) and labels.tolist() == [3, 0]


def test_normalised_bundled_image_matches_its_png() -> None:
    png = resources.files("gradleak.data").joinpath("samples", "cifar10_test_0001.png")
    with png.open("rb") as handle:
        expected = _by_hand(
            np.asarray(Image.open(handle).convert("RGB")), CIFAR10_MEAN, CIFAR10_STD
        )
    x, labels = open_images("cifar10", None).normalized([1])
    torch.testing.assert_close(x[0], expected)
    assert labels.tolist() == [8]


def test_other_splits_and_datasets_need_a_root() -> None:
    with pytest.raises(GradleakError, match="--data-root DIR is required"):
        open_images("cifar10", None, split="train")
    with pytest.raises(GradleakError, match="--data-root DIR is required"):
        open_images("mnist", None)


def test_folder_images_take_the_photo_statistics(folder: Path) -> None:
    images = open_images("folder", folder)
    assert images.stats == PHOTO_STATS and images.class_names == ("blue", "red")
    assert images.description == f"folder {folder}"
    assert (images.channels, images.size) == (3, (FOLDER_IMAGE_SIZE, FOLDER_IMAGE_SIZE))
    x, labels = images.normalized([2])
    assert x.shape == (1, 3, 32, 32) and labels.tolist() == [1]
    red = np.full((32, 32, 3), (255, 0, 128), dtype=np.uint8)
    torch.testing.assert_close(x[0], _by_hand(red, PHOTO_MEAN, PHOTO_STD))


def test_folder_images_are_resized_to_the_image_size(folder: Path) -> None:
    images = open_images("folder", folder, image_size=12)
    assert images.pixels([0])[0].shape == (1, 3, 12, 12)
    assert input_shape("folder", 12) == (3, (12, 12))


def test_fixed_size_datasets_refuse_another_size() -> None:
    assert input_shape("mnist") == (1, (28, 28))
    assert open_images("cifar10", None, image_size=32).size == (32, 32)
    with pytest.raises(GradleakError, match="cifar10 images are 32 pixels; drop --image-size"):
        open_images("cifar10", None, image_size=64)


def test_folders_have_no_splits(folder: Path) -> None:
    with pytest.raises(GradleakError, match="image folders have no splits"):
        open_images("folder", folder, split="train")


def test_unknown_dataset() -> None:
    with pytest.raises(GradleakError, match="unknown dataset 'svhn'"):
        open_images("svhn", None)


@pytest.mark.parametrize("indices", [[0, 8], [9, 2, 8], [-1]])
def test_indices_outside_the_dataset_are_one_line(indices: list[int]) -> None:
    with pytest.raises(GradleakError) as info:
        open_images("cifar10", None).pixels(indices)
    message = str(info.value)
    worst = max(i for i in indices if not 0 <= i < 8)
    assert message == (
        f"image index {worst} is out of range: bundled CIFAR-10 test images has 8 images (0..7)"
    )


def test_no_indices_is_an_error() -> None:
    with pytest.raises(GradleakError, match="choose at least one index"):
        open_images("cifar10", None).normalized([])


def test_dataset_split_is_described_and_normalised(shared_data: Path) -> None:
    images = open_images("cifar10", shared_data, split="test")
    assert images.description == "cifar10 test split" and len(images) == 600
    assert images.describe([4]) == "cifar10 test split, indices 4"
    with (shared_data / "cifar-10-batches-py" / "test_batch").open("rb") as handle:
        batch = pickle.load(handle, encoding="bytes")
    row = np.asarray(batch[b"data"][4], dtype=np.uint8).reshape(3, 32, 32).transpose(1, 2, 0)
    x, labels = images.normalized([4])
    torch.testing.assert_close(x[0], _by_hand(row, CIFAR10_MEAN, CIFAR10_STD))
    assert labels.tolist() == [batch[b"labels"][4]]
    assert open_images("mnist", shared_data).description == "mnist test split"
