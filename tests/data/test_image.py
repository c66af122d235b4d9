"""Single-image loading: decoding, cover-resize, centre-crop, channel conversion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gradleak.core.errors import GradleakError
from gradleak.data import IMAGE_SUFFIXES, is_image_file, load_image

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def _stripes(path: Path, marker: bool = True) -> np.ndarray:
    """A 40-wide, 20-high RGB PNG: columns 0-9 red, 10-29 green, 30-39 blue."""
    arr = np.zeros((20, 40, 3), dtype=np.uint8)
    arr[:, :10] = RED
    arr[:, 10:30] = GREEN
    arr[:, 30:] = BLUE
    if marker:
        arr[5, 15] = (1, 2, 3)  # a pixel that must survive a crop without resizing
    Image.fromarray(arr, "RGB").save(path)
    return arr


def _chw(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(arr).permute(2, 0, 1).float() / 255


def test_crop_without_resize_is_exact(tmp_path: Path) -> None:
    arr = _stripes(tmp_path / "s.png")
    x = load_image(tmp_path / "s.png", (20, 20), 3)
    assert x.shape == (3, 20, 20) and x.dtype == torch.float32
    assert torch.equal(x, _chw(arr[:, 10:30]))


def test_same_size_returns_the_pixels(tmp_path: Path) -> None:
    arr = _stripes(tmp_path / "s.png")
    assert torch.equal(load_image(tmp_path / "s.png", (20, 40), 3), _chw(arr))


def test_shorter_side_resize_then_centre_crop(tmp_path: Path) -> None:
    _stripes(tmp_path / "s.png", marker=False)
    x = load_image(tmp_path / "s.png", (10, 10), 3)
    # 40×20 is halved to 20×10, whose centre 10 columns come from the green stripe.
    assert x.shape == (3, 10, 10)
    centre = x[:, :, 3:7]
    green = torch.tensor([0.0, 1.0, 0.0]).view(3, 1, 1).expand_as(centre)
    assert torch.equal(centre, green)
    # The crop's edges are 2 resized columns from the red and blue stripes: a little bleeds in.
    assert 0.0 < float(x[0, 0, 0]) < 0.2 and 0.0 < float(x[2, 0, 9]) < 0.2
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0


def test_non_square_target_and_portrait_input(tmp_path: Path) -> None:
    _stripes(tmp_path / "s.png")
    assert load_image(tmp_path / "s.png", (10, 20), 3).shape == (3, 10, 20)
    tall = np.zeros((40, 20, 3), dtype=np.uint8)
    tall[10:30] = 200
    Image.fromarray(tall, "RGB").save(tmp_path / "tall.png")
    x = load_image(tmp_path / "tall.png", (20, 20), 3)
    # No resize needed: rows 10..29 are kept, which are all 200.
    assert torch.equal(x, torch.full((3, 20, 20), 200 / 255))
    assert load_image(tmp_path / "tall.png", (7, 5), 3).shape == (3, 7, 5)


def test_upscaling_a_constant_image_stays_constant(tmp_path: Path) -> None:
    Image.new("RGB", (3, 5), (10, 20, 30)).save(tmp_path / "c.bmp")
    x = load_image(tmp_path / "c.bmp", (32, 32), 3)
    expected = torch.tensor([10, 20, 30]).float().div(255).view(3, 1, 1).expand(3, 32, 32)
    assert x.shape == (3, 32, 32)
    assert torch.allclose(x, expected, atol=1 / 255)


def test_grey_conversion(tmp_path: Path) -> None:
    Image.new("RGB", (8, 8), RED).save(tmp_path / "red.png")
    x = load_image(tmp_path / "red.png", (8, 8), 1)
    assert x.shape == (1, 8, 8)
    # ITU-R 601 luma: 0.299 * 255 = 76.2
    assert torch.allclose(x, torch.full((1, 8, 8), 76 / 255))
    Image.new("L", (8, 8), 128).save(tmp_path / "grey.png")
    rgb = load_image(tmp_path / "grey.png", (8, 8), 3)
    assert rgb.shape == (3, 8, 8) and torch.equal(rgb, torch.full((3, 8, 8), 128 / 255))


def test_undecodable_and_missing_files(tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG not really an image")
    with pytest.raises(GradleakError, match="could not be decoded") as err:
        load_image(bad, (8, 8), 3)
    assert str(bad) in str(err.value)
    with pytest.raises(GradleakError, match="does not exist"):
        load_image(tmp_path / "absent.jpg", (8, 8), 3)


def test_invalid_request(tmp_path: Path) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    with pytest.raises(GradleakError, match="channels"):
        load_image(tmp_path / "a.png", (8, 8), 4)
    with pytest.raises(GradleakError, match="size"):
        load_image(tmp_path / "a.png", (0, 8), 3)


def test_image_suffixes_are_case_insensitive() -> None:
    wanted = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
    assert set(IMAGE_SUFFIXES) == wanted
    assert is_image_file(Path("a/B.PNG")) and is_image_file(Path("x.JpEg"))
    assert not is_image_file(Path("notes.txt")) and not is_image_file(Path("png"))
