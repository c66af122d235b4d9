"""Reading one image file into a float tensor of a fixed size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from gradleak.core.errors import GradleakError

IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
)
_MODES = {1: "L", 3: "RGB"}


def is_image_file(path: Path) -> bool:
    """True for a file whose suffix is an image format (any letter case)."""
    return path.suffix.lower() in IMAGE_SUFFIXES


def check_size_and_channels(size: tuple[int, int], channels: int) -> tuple[int, int]:
    """Validate a requested image size (H, W) and channel count; return the size as ints."""
    if channels not in _MODES:
        raise GradleakError(f"channels must be 1 (grey) or 3 (RGB), got {channels}")
    if len(size) != 2 or any(int(s) != s or s < 1 for s in size):
        raise GradleakError(f"image size must be two positive integers (H, W), got {size}")
    return int(size[0]), int(size[1])


def _open(path: Path, mode: str) -> Image.Image:
    try:
        with Image.open(path) as img:
            # Honour the camera's orientation tag so the pixels match what viewers show.
            upright = ImageOps.exif_transpose(img)
            return upright.convert(mode)
    except FileNotFoundError as e:
        raise GradleakError(f"image file {path} does not exist; check the path") from e
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as e:
        raise GradleakError(
            f"image file {path} could not be decoded ({e}); "
            "replace it with a valid PNG/JPEG/... file or remove it"
        ) from e


def _resize_and_crop(img: Image.Image, height: int, width: int) -> Image.Image:
    w, h = img.size
    if (w, h) != (width, height):
        # Scale so the image just covers the target (for a square target: the shorter
        # side matches), then cut the overhang symmetrically.
        scale = max(height / h, width / w)
        new_w = max(width, round(w * scale))
        new_h = max(height, round(h * scale))
        if (new_w, new_h) != (w, h):
            # PIL's bicubic resize widens its kernel when shrinking, i.e. it antialiases.
            img = img.resize((new_w, new_h), Image.Resampling.BICUBIC)
        left = (new_w - width) // 2
        top = (new_h - height) // 2
        img = img.crop((left, top, left + width, top + height))
    return img


def load_image(path: Path, size: tuple[int, int], channels: int) -> Tensor:
    """Load `path` as float32 C×H×W in [0, 1]: resized to cover `size`, centre-cropped."""
    height, width = check_size_and_channels(size, channels)
    img = _resize_and_crop(_open(Path(path), _MODES[channels]), height, width)
    pixels = np.array(img, dtype=np.uint8)  # a writable copy, which torch requires
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    chw = np.ascontiguousarray(pixels.transpose(2, 0, 1))
    return torch.from_numpy(chw).float().div_(255.0)
