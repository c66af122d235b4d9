"""Property tests: any file or Pillow image gives pixels in [0, 1] or one GradleakError."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from gradleak.core.errors import GradleakError
from gradleak.data import load_image
from gradleak.data.image import image_pixels
from gradleak.data.modes import READABLE_MODES

SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
# Every mode Pillow makes in memory, readable or not ("La" is not).
MODES = sorted({*READABLE_MODES, "La"})
SIDES = st.integers(min_value=1, max_value=6) | st.sampled_from([1, 10_000])
TARGETS = st.tuples(st.integers(1, 9), st.integers(1, 9))
FORMATS = ["PNG", "TIFF", "JPEG", "BMP", "GIF", "WEBP"]


def _check(call: object, channels: int, size: tuple[int, int]) -> None:
    try:
        x = call()  # type: ignore[operator]
    except GradleakError as exc:
        assert "\n" not in str(exc), str(exc)
        return
    assert x.shape == (channels, *size) and x.dtype == torch.float32
    assert bool(torch.isfinite(x).all()) and float(x.min()) >= 0 and float(x.max()) <= 1


@st.composite
def images(draw: st.DrawFn) -> Image.Image:
    mode = draw(st.sampled_from(MODES))
    width, height = draw(SIDES), draw(SIDES)
    if width * height > 20_000:  # one long row or column
        width, height = (width, 1) if width > height else (1, height)
    img = Image.new(mode, (width, height))
    raw = draw(st.binary(min_size=64, max_size=64))
    # Fill the raw buffer with a repeated random pattern (any bytes are valid pixels).
    needed = len(img.tobytes())
    pattern = (raw * (needed // len(raw) + 1))[:needed]
    img.frombytes(pattern)
    if mode in ("P", "PA", "L", "RGB") and draw(st.booleans()):
        img.info["transparency"] = 0
    if mode in ("P", "PA"):
        img.putpalette(list(draw(st.binary(min_size=768, max_size=768))))
    return img


@SETTINGS
@given(img=images(), size=TARGETS, channels=st.sampled_from([1, 3]))
def test_any_pillow_image_gives_pixels_or_one_error(
    img: Image.Image, size: tuple[int, int], channels: int
) -> None:
    _check(lambda: image_pixels(img, size, channels), channels, size)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("images")


@SETTINGS
@given(img=images(), fmt=st.sampled_from(FORMATS), size=TARGETS, channels=st.sampled_from([1, 3]))
def test_any_saved_image_gives_pixels_or_one_error(
    folder: Path, img: Image.Image, fmt: str, size: tuple[int, int], channels: int
) -> None:
    buffer = io.BytesIO()
    try:
        img.save(buffer, fmt)
    except (OSError, ValueError, KeyError, TypeError):
        return  # a mode this format cannot hold
    path = folder / f"image.{fmt.lower()}"
    path.write_bytes(buffer.getvalue())
    _check(lambda: load_image(path, size, channels), channels, size)


@SETTINGS
@given(
    data=st.binary(max_size=400),
    header=st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"BM", b"II*\x00", b"\xff\xd8"]),
    suffix=st.sampled_from([".png", ".jpg", ".gif", ".bmp", ".tif", ".webp"]),
)
def test_any_bytes_give_pixels_or_one_error(
    folder: Path, data: bytes, header: bytes, suffix: str
) -> None:
    path = folder / f"bytes{suffix}"
    path.write_bytes(header + data)
    with warnings.catch_warnings():
        # Pillow warns about odd files it still decodes; only errors matter here.
        warnings.simplefilter("ignore")
        _check(lambda: load_image(path, (4, 4), 3), 3, (4, 4))


@SETTINGS
@given(
    data=st.binary(min_size=1, max_size=200),
    fmt=st.sampled_from(FORMATS),
    cut=st.floats(min_value=0.1, max_value=0.95),
)
def test_truncated_and_corrupted_files_give_one_error(
    folder: Path, data: bytes, fmt: str, cut: float
) -> None:
    pixels = np.frombuffer((data * 48)[:48], dtype=np.uint8).reshape(4, 4, 3)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt)
    encoded = buffer.getvalue()
    path = folder / f"cut.{fmt.lower()}"
    path.write_bytes(encoded[: max(1, int(len(encoded) * cut))])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _check(lambda: load_image(path, (4, 4), 1), 1, (4, 4))
