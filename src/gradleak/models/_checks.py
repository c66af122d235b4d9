"""Validation of the constructor arguments every model shares."""

from __future__ import annotations

from collections.abc import Sequence

from gradleak.core.errors import GradleakError


def positive_int(name: str, value: object) -> int:
    """Return `value` if it is an int >= 1, else raise a GradleakError naming `name`."""
    # bool is a subclass of int; `True` as a width is always a mistake.
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise GradleakError(f"{name} must be a positive integer, got {value!r}; pass e.g. 1 or 10")
    return value


def image_hw(image_size: object) -> tuple[int, int]:
    """Return `image_size` as an (height, width) pair of positive ints."""
    if isinstance(image_size, str) or not isinstance(image_size, Sequence) or len(image_size) != 2:
        raise GradleakError(
            f"image_size must be a (height, width) pair, got {image_size!r}; pass e.g. (32, 32)"
        )
    height, width = image_size
    return positive_int("image height", height), positive_int("image width", width)


def common_args(
    num_classes: object, in_channels: object, image_size: object
) -> tuple[int, int, tuple[int, int]]:
    """Validate the (num_classes, in_channels, image_size) triple all models take."""
    return (
        positive_int("num_classes", num_classes),
        positive_int("in_channels", in_channels),
        image_hw(image_size),
    )
