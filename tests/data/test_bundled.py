"""Bundled CIFAR-10 sample images: contents, manifest, and equality with the real batch."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import torch

from gradleak.data import load_bundled_cifar10, load_cifar10

CIFAR10_NAMES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


def test_bundled_images_and_labels() -> None:
    source = load_bundled_cifar10()
    assert len(source) == 8
    assert source.images.shape == (8, 3, 32, 32) and source.images.dtype == torch.uint8
    # Labels of CIFAR-10 test images 0..7.
    assert source.labels.tolist() == [3, 8, 8, 0, 6, 6, 1, 6]
    assert source.class_names == CIFAR10_NAMES
    x, y = source[0]
    assert y == 3 and x.shape == (3, 32, 32) and x.dtype == torch.float32


def test_manifest_describes_every_file() -> None:
    folder = resources.files("gradleak.data").joinpath("samples")
    manifest = json.loads(folder.joinpath("cifar10_test.json").read_text(encoding="utf-8"))
    assert manifest["source"] == "CIFAR-10 test batch (Krizhevsky 2009)"
    assert tuple(manifest["class_names"]) == CIFAR10_NAMES
    entries = manifest["images"]
    assert [e["index"] for e in entries] == list(range(8))
    assert [e["file"] for e in entries] == [f"cifar10_test_{i:04d}.png" for i in range(8)]
    assert all(folder.joinpath(e["file"]).is_file() for e in entries)


def test_bundled_pixels_equal_the_official_batch(shared_data: Path) -> None:
    bundled = load_bundled_cifar10()
    official = load_cifar10(shared_data)
    assert torch.equal(bundled.images, official.images[:8])
    assert torch.equal(bundled.labels, official.labels[:8])
    assert bundled.class_names == official.class_names
