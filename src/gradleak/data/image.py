"""Reading one image file into a float tensor of a fixed size."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

from gradleak.core.errors import GradleakError
from gradleak.data.modes import CHANNEL_MODES, FLOAT_MODE, to_channels

IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
)
# The largest image side: one 3×4096×4096 image is 200 MB as float32 and an attack keeps
# several copies of it per trial (candidate, optimiser moments, gradients), so larger sides
# exceed the memory of ordinary machines before the first step.
MAX_IMAGE_SIZE = 4096
# The cover-resize holds the whole scaled image before cropping it; a very elongated image
# (say 1×1000000 covering 64×64) would scale to more pixels than fit in memory.
MAX_SCALED_PIXELS = 2**27


def is_image_file(path: Path) -> bool:
    """True for a file whose suffix is an image format (any letter case)."""
    return path.suffix.lower() in IMAGE_SUFFIXES


def check_size_and_channels(size: tuple[int, int], channels: int) -> tuple[int, int]:
    """Validate a requested image size (H, W) and channel count; return the size as ints.

    Args:
        size: (height, width), each an int in 1..`MAX_IMAGE_SIZE`.
        channels: 1 (grey) or 3 (RGB).

    Returns:
        The size as a pair of ints.

    Raises:
        GradleakError: when `channels` is not 1 or 3, or the size is not two ints in range.
    """
    if channels not in CHANNEL_MODES:
        raise GradleakError(f"channels must be 1 (grey) or 3 (RGB), got {channels}")
    if not isinstance(size, Sequence) or len(size) != 2 or not all(map(_is_side, size)):
        raise GradleakError(
            f"image size must be two integers (H, W) in 1..{MAX_IMAGE_SIZE}, got {size}"
        )
    return int(size[0]), int(size[1])


def _is_side(value: object) -> bool:
    # Whole numbers only (32 or 32.0); bool is an int to Python but never a size.
    return (
        isinstance(value, int | float | np.integer)
        and not isinstance(value, bool)
        and float(value).is_integer()
        and 1 <= value <= MAX_IMAGE_SIZE
    )


def _open(path: Path) -> Image.Image:
    name = f"image file {path}"
    if path.is_dir():
        raise GradleakError(f"{name} is a folder, not an image; pass an image file")
    try:
        with Image.open(path) as img:
            img.load()
            # Honour the camera's orientation tag so the pixels match what viewers show.
            return ImageOps.exif_transpose(img)
    except FileNotFoundError as e:
        raise GradleakError(f"{name} does not exist; check the path") from e
    except PermissionError as e:
        raise GradleakError(f"{name} cannot be read (permission denied); check its mode") from e
    # Pillow's decoders raise many unrelated types on broken or hostile files (OSError,
    # ValueError, SyntaxError, struct.error, EOFError, IndexError, DecompressionBombError,
    # ...); this block calls nothing but Pillow, so every one of them means a bad file.
    except Exception as e:
        raise GradleakError(
            f"{name} could not be decoded ({type(e).__name__}: {e}); "
            "replace it with a valid PNG/JPEG/... file or remove it"
        ) from e


def _resize_and_crop(img: Image.Image, height: int, width: int, name: str) -> Image.Image:
    w, h = img.size
    if (w, h) != (width, height):
        # Scale so the image just covers the target (for a square target: the shorter
        # side matches), then cut the overhang symmetrically.
        scale = max(height / h, width / w)
        new_w = max(width, round(w * scale))
        new_h = max(height, round(h * scale))
        if new_w * new_h > MAX_SCALED_PIXELS:
            raise GradleakError(
                f"{name} is {w}×{h} pixels; covering {width}×{height} would scale it to "
                f"{new_w}×{new_h}, more than {MAX_SCALED_PIXELS} pixels; crop it closer to "
                "the target's shape first"
            )
        if (new_w, new_h) != (w, h):
            # PIL's bicubic resize widens its kernel when shrinking, i.e. it antialiases.
            img = img.resize((new_w, new_h), Image.Resampling.BICUBIC)
        left = (new_w - width) // 2
        top = (new_h - height) // 2
        img = img.crop((left, top, left + width, top + height))
    return img


def image_pixels(
    img: Image.Image, size: tuple[int, int], channels: int, name: str = "image"
) -> Tensor:
    """An opened image as float32 C×H×W in [0, 1]: resized to cover `size`, centre-cropped.

    Every mode of `gradleak.data.modes.READABLE_MODES` is read with its own value range
    (16-bit images divided by 65535, transparency composited on white); greyscale images
    are repeated for channels=3 and colour images take their luma for channels=1.

    Args:
        img: a loaded Pillow image.
        size: (height, width) of the result, each in 1..`MAX_IMAGE_SIZE`.
        channels: 1 (grey) or 3 (RGB).
        name: how errors name the image, e.g. "image file a.png".

    Returns:
        The pixels, float32 of shape (channels, height, width), in [0, 1].

    Raises:
        GradleakError: a bad size or channel count, an image mode gradleak does not read,
            a 32-bit image outside its range, or an image too elongated to cover `size`.
    """
    height, width = check_size_and_channels(size, channels)
    converted = _resize_and_crop(to_channels(img, channels, name), height, width, name)
    if converted.mode == FLOAT_MODE:
        # Bicubic resizing overshoots at edges; the pixel box is [0, 1].
        grey = np.clip(np.asarray(converted, dtype=np.float32), 0.0, 1.0)
        return torch.from_numpy(grey.copy()).unsqueeze(0).expand(channels, -1, -1).contiguous()
    pixels = np.array(converted, dtype=np.uint8)  # a writable copy, which torch requires
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    chw = np.ascontiguousarray(pixels.transpose(2, 0, 1))
    return torch.from_numpy(chw).float().div_(255.0)


def load_image(path: Path, size: tuple[int, int], channels: int) -> Tensor:
    """Load `path` as float32 C×H×W in [0, 1]: resized to cover `size`, centre-cropped.

    Args:
        path: an image file in any format and mode Pillow opens (see `image_pixels`).
        size: (height, width) of the result, each in 1..`MAX_IMAGE_SIZE`.
        channels: 1 (grey) or 3 (RGB).

    Returns:
        The pixels, float32 of shape (channels, height, width), in [0, 1].

    Raises:
        GradleakError: a bad size or channel count; a path that is missing, a folder or
            unreadable; a file that is no image; or an image `image_pixels` refuses.
    """
    check_size_and_channels(size, channels)
    path = Path(path)
    return image_pixels(_open(path), size, channels, f"image file {path}")
