"""Real CIFAR-10 test images shipped inside the package, usable with no data download."""

from __future__ import annotations

import io
import json
from importlib import resources
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from gradleak.core.errors import GradleakError
from gradleak.data.source import ArrayImageSource

if TYPE_CHECKING:  # importlib.resources.abc exists from Python 3.11 on
    from importlib.resources.abc import Traversable

_MANIFEST = "cifar10_test.json"


def _samples_dir() -> Traversable:
    return resources.files("gradleak.data").joinpath("samples")


def _read_png(folder: Traversable, name: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(folder.joinpath(name).read_bytes())) as img:
            pixels = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError) as e:
        raise GradleakError(
            f"bundled sample {name} is missing or unreadable ({e}); reinstall gradleak"
        ) from e
    if pixels.shape != (32, 32, 3):
        raise GradleakError(f"bundled sample {name} is {pixels.shape}, expected 32×32 RGB")
    return pixels


def _manifest(folder: Traversable) -> dict[str, Any]:
    try:
        return json.loads(folder.joinpath(_MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise GradleakError(
            f"bundled manifest {_MANIFEST} is missing or unreadable ({e}); reinstall gradleak"
        ) from e


def load_bundled_cifar10() -> ArrayImageSource:
    """The first CIFAR-10 test images (indices 0..7), bundled as PNG, with their labels."""
    folder = _samples_dir()
    manifest = _manifest(folder)
    entries = manifest["images"]
    pixels = np.stack([_read_png(folder, entry["file"]) for entry in entries])
    images = torch.from_numpy(np.ascontiguousarray(pixels.transpose(0, 3, 1, 2)))
    labels = torch.tensor([int(entry["label"]) for entry in entries], dtype=torch.int64)
    return ArrayImageSource(images, labels, manifest["class_names"])
