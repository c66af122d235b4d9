"""The image-source interface every loader returns, and an in-memory implementation."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from gradleak.core.errors import GradleakError


@runtime_checkable
class ImageSource(Protocol):
    """Indexable labelled images: float32 C×H×W in [0, 1] and an integer label."""

    class_names: tuple[str, ...]

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> tuple[Tensor, int]: ...


def check_index(i: int, size: int, what: str = "dataset") -> int:
    """Return `i` as a plain int, or raise if it is not in 0..size-1."""
    try:
        index = operator.index(i)
    except TypeError:
        raise GradleakError(
            f"image index {i!r} is not an integer; use an integer in 0..{size - 1}"
        ) from None
    # Negative indices are rejected rather than wrapped: a sample id of -1 in a config
    # is far more likely a mistake than a request for the last image.
    if not 0 <= index < size:
        valid = f"0..{size - 1}" if size > 0 else "none, it is empty"
        raise GradleakError(
            f"image index {index} is out of range for a {what} of {size} images "
            f"(valid indices: {valid})"
        )
    return index


class ArrayImageSource:
    """Images held in memory as uint8 N×C×H×W with int64 labels; floats are made on access."""

    def __init__(
        self, images: Tensor, labels: Tensor | Sequence[int], class_names: Sequence[str]
    ) -> None:
        images = torch.as_tensor(images)
        labels = torch.as_tensor(labels, dtype=torch.int64)
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise GradleakError(
                f"images must be a uint8 tensor of shape N×C×H×W, got {images.dtype} "
                f"with shape {tuple(images.shape)}; convert them with (x * 255).round().byte()"
            )
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise GradleakError(
                f"labels must be a 1-D tensor with one label per image ({images.shape[0]}), "
                f"got shape {tuple(labels.shape)}"
            )
        names = tuple(str(n) for n in class_names)
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= len(names)):
            raise GradleakError(
                f"labels must lie in 0..{len(names) - 1} for {len(names)} class names, "
                f"got {int(labels.min())}..{int(labels.max())}; pass the full list of class names"
            )
        self.images = images
        self.labels = labels
        self.class_names = names

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        index = check_index(i, len(self))
        return self.images[index].float().div_(255.0), int(self.labels[index])

    def __repr__(self) -> str:
        _, c, h, w = self.images.shape
        return f"ArrayImageSource({len(self)} images, {c}×{h}×{w}, {len(self.class_names)} classes)"


def stack(source: ImageSource, indices: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Gather images B×C×H×W (float32 in [0, 1]) and int64 labels for `indices`."""
    size = len(source)
    checked = [check_index(i, size) for i in indices]
    if not checked:
        raise GradleakError("no image indices given; choose at least one index")
    if isinstance(source, ArrayImageSource):
        # One gather instead of a Python loop: this is the hot path for large batches.
        idx = torch.tensor(checked, dtype=torch.int64)
        return source.images[idx].float().div_(255.0), source.labels[idx].clone()
    items = [source[i] for i in checked]
    shapes = {tuple(x.shape) for x, _ in items}
    if len(shapes) > 1:
        raise GradleakError(
            f"images at indices {checked} have different shapes {sorted(shapes)}; "
            "load them with one common size"
        )
    images = torch.stack([x for x, _ in items]).to(torch.float32)
    labels = torch.tensor([y for _, y in items], dtype=torch.int64)
    return images, labels
