"""Every image mode Pillow opens is read with its own value range, or refused naming the mode."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gradleak.core.errors import GradleakError
from gradleak.data import load_image, load_image_folder
from gradleak.data.image import MAX_SCALED_PIXELS, image_pixels
from gradleak.data.modes import ALPHA_BACKGROUND, READABLE_MODES

WHITE = ALPHA_BACKGROUND / 255


def _grey(values: np.ndarray, channels: int = 1) -> torch.Tensor:
    """A H×W array of [0, 1] values as the C×H×W tensor the loader returns."""
    t = torch.from_numpy(np.asarray(values, dtype=np.float32))
    return t.unsqueeze(0).expand(channels, -1, -1)


def _rgb(values: np.ndarray) -> torch.Tensor:
    """A H×W×3 array of 0..255 values as a 3×H×W tensor in [0, 1]."""
    return torch.from_numpy(np.asarray(values, dtype=np.float32)).permute(2, 0, 1) / 255


def _load(img: Image.Image, tmp_path: Path, suffix: str, channels: int) -> torch.Tensor:
    path = tmp_path / f"image{suffix}"
    img.save(path)
    return load_image(path, (img.height, img.width), channels)


# --- deeper than 8 bits: their own range, never clipped at 255 ---------------------------------


SIXTEEN = np.array([[0, 255, 256, 257], [1000, 40000, 65534, 65535]], dtype=np.uint16)


@pytest.mark.parametrize("channels", [1, 3])
def test_16_bit_png_is_scaled_by_65535(tmp_path: Path, channels: int) -> None:
    img = Image.fromarray(SIXTEEN)
    assert img.mode == "I;16"
    x = _load(img, tmp_path, ".png", channels)
    assert torch.equal(x, _grey(SIXTEEN / 65535, channels))
    # 256 and 257 are one 8-bit level apart: only a 16-bit read tells them apart.
    assert x[0, 0, 2] < x[0, 0, 3]


@pytest.mark.parametrize("mode", ["I;16", "I;16L", "I;16B", "I;16N"])
def test_every_16_bit_layout(mode: str) -> None:
    img = Image.new(mode, (4, 2))
    for (row, col), value in np.ndenumerate(SIXTEEN):
        img.putpixel((col, row), int(value))
    assert torch.equal(image_pixels(img, (2, 4), 1), _grey(SIXTEEN / 65535))


def test_16_bit_big_endian_tiff(tmp_path: Path) -> None:
    img = Image.new("I;16B", (4, 2))
    for (row, col), value in np.ndenumerate(SIXTEEN):
        img.putpixel((col, row), int(value))
    path = tmp_path / "big.tif"
    img.save(path)
    assert Image.open(path).mode == "I;16B"
    assert torch.equal(load_image(path, (2, 4), 1), _grey(SIXTEEN / 65535))


def test_32_bit_integer_within_16_bits_and_refused_beyond(tmp_path: Path) -> None:
    values = SIXTEEN.astype(np.int32)
    x = _load(Image.fromarray(values), tmp_path, ".tif", 3)
    assert torch.equal(x, _grey(values / 65535, 3))
    for bad in (-1, 70000):
        values[0, 0] = bad
        with pytest.raises(GradleakError, match=r"is a I image with values .* outside"):
            _load(Image.fromarray(values), tmp_path, ".tif", 1)


def test_float_image_in_unit_range_and_refused_outside(tmp_path: Path) -> None:
    values = np.array([[0.0, 0.25], [0.5, 1.0]], dtype=np.float32)
    x = _load(Image.fromarray(values), tmp_path, ".tif", 1)
    assert torch.equal(x, _grey(values))
    for bad in (1.5, -0.1, np.nan, np.inf):
        values[0, 0] = bad
        with pytest.raises(GradleakError, match="is a F image with values") as err:
            image_pixels(Image.fromarray(values), (2, 2), 1, "image file x.tif")
        assert "x.tif" in str(err.value)


def test_resizing_a_16_bit_image_keeps_its_precision() -> None:
    img = Image.fromarray(np.full((2, 2), 40000, dtype=np.uint16))
    x = image_pixels(img, (6, 6), 3)
    assert x.shape == (3, 6, 6)
    assert torch.allclose(x, torch.full((3, 6, 6), 40000 / 65535), atol=1e-6)


def test_16_bit_colour_key_is_the_background() -> None:
    img = Image.fromarray(SIXTEEN)
    img.info["transparency"] = 40000
    expected = SIXTEEN / 65535
    expected[SIXTEEN == 40000] = WHITE
    assert torch.equal(image_pixels(img, (2, 4), 1), _grey(expected))


# --- 8-bit modes ------------------------------------------------------------------------------


def test_one_bit_and_grey(tmp_path: Path) -> None:
    bits = np.array([[True, False, True]])
    assert torch.equal(_load(Image.fromarray(bits), tmp_path, ".png", 3), _grey(bits * 1.0, 3))
    grey = np.array([[0, 7, 128, 255]], dtype=np.uint8)
    assert torch.equal(_load(Image.fromarray(grey), tmp_path, ".png", 1), _grey(grey / 255))


PALETTE = [255, 0, 0, 0, 0, 255, 10, 20, 30]
INDICES = np.array([[0, 1, 2]], dtype=np.uint8)


def _palette_image() -> Image.Image:
    img = Image.fromarray(INDICES, "L").convert("P")
    img.putpalette(PALETTE)
    return img


def test_palette_without_transparency(tmp_path: Path) -> None:
    x = _load(_palette_image(), tmp_path, ".png", 3)
    assert torch.equal(x, _rgb(np.array(PALETTE).reshape(1, 3, 3)))


def test_palette_transparency_shows_the_background(tmp_path: Path) -> None:
    img = _palette_image()
    img.info["transparency"] = 1  # the blue entry
    x = _load(img, tmp_path, ".png", 3)
    expected = np.array([[[255, 0, 0], [255, 255, 255], [10, 20, 30]]])
    assert torch.equal(x, _rgb(expected))


def test_palette_with_alpha() -> None:
    img = Image.new("PA", (3, 1))
    img.putpalette(PALETTE)
    for col, (index, alpha) in enumerate([(0, 255), (1, 0), (2, 255)]):
        img.putpixel((col, 0), (index, alpha))
    expected = np.array([[[255, 0, 0], [255, 255, 255], [10, 20, 30]]])
    assert torch.equal(image_pixels(img, (1, 3), 3), _rgb(expected))


def _composite(value: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Straight alpha over the white background, in 0..255."""
    a = alpha.astype(np.float64) / 255
    return value * a + ALPHA_BACKGROUND * (1 - a)


def test_rgba_is_composited_on_white(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, size=(5, 6, 4), dtype=np.uint8)
    rgba[0, 0, 3], rgba[0, 1, 3] = 0, 255  # fully transparent and fully opaque pixels
    x = _load(Image.fromarray(rgba), tmp_path, ".png", 3)
    expected = _rgb(_composite(rgba[..., :3], rgba[..., 3:]))
    assert torch.allclose(x, expected, atol=1 / 255)
    assert torch.equal(x[:, 0, 0], torch.ones(3))
    assert torch.equal(x[:, 0, 1], torch.from_numpy(rgba[0, 1, :3] / 255).float())


def test_grey_with_alpha(tmp_path: Path) -> None:
    la = np.array([[[100, 255], [100, 0], [100, 128]]], dtype=np.uint8)
    x = _load(Image.fromarray(la, "LA"), tmp_path, ".png", 1)
    expected = _composite(la[..., 0], la[..., 1]) / 255
    assert torch.allclose(x, _grey(expected), atol=1 / 255)
    assert x[0, 0, 0] == pytest.approx(100 / 255) and x[0, 0, 1] == 1.0


def test_premultiplied_alpha() -> None:
    img = Image.new("RGBa", (2, 1))
    img.putpixel((0, 0), (10, 20, 30, 255))
    img.putpixel((1, 0), (0, 0, 0, 0))
    expected = np.array([[[10, 20, 30], [ALPHA_BACKGROUND] * 3]])
    assert torch.equal(image_pixels(img, (1, 2), 3), _rgb(expected))


def test_rgbx_drops_the_padding() -> None:
    img = Image.new("RGBX", (1, 1), (10, 20, 30, 99))
    assert torch.equal(image_pixels(img, (1, 1), 3), _rgb(np.array([[[10, 20, 30]]])))


@pytest.mark.parametrize("suffix", [".jpg", ".tif"])
def test_cmyk(tmp_path: Path, suffix: str) -> None:
    cmyk = (10, 20, 30, 40)
    img = Image.new("CMYK", (8, 8), cmyk)
    expected = [(255 - cmyk[3]) * (1 - c / 255) for c in cmyk[:3]]
    x = _load(img, tmp_path, suffix, 3)
    # JPEG is lossy; TIFF is exact up to Pillow's rounding.
    tolerance = 3 / 255 if suffix == ".jpg" else 1 / 255
    assert torch.allclose(x, _rgb(np.full((8, 8, 3), expected)), atol=tolerance)


def test_ycbcr(tmp_path: Path) -> None:
    y, cb, cr = 100, 150, 200
    img = Image.new("YCbCr", (2, 2), (y, cb, cr))
    # JFIF's full-range YCbCr.
    rgb = (y + 1.402 * (cr - 128), y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128))
    rgb += (y + 1.772 * (cb - 128),)
    x = _load(img, tmp_path, ".tif", 3)
    assert torch.allclose(x, _rgb(np.full((2, 2, 3), rgb)), atol=1 / 255)


def _lab_grey(lightness_byte: int) -> float:
    """sRGB value of CIE L* (a* = b* = 0, D65): Y from L*, then the sRGB transfer curve."""
    lightness = lightness_byte / 255 * 100
    luminance = ((lightness + 16) / 116) ** 3 if lightness > 8 else lightness / 903.3
    if luminance <= 0.0031308:
        return 12.92 * luminance
    return 1.055 * luminance ** (1 / 2.4) - 0.055


@pytest.mark.parametrize("channels", [1, 3])
def test_lab(tmp_path: Path, channels: int) -> None:
    img = Image.new("LAB", (3, 1))
    for col, lightness in enumerate((0, 128, 255)):
        img.putpixel((col, 0), (lightness, 128, 128))
    x = _load(img, tmp_path, ".tif", channels)
    expected = np.array([[_lab_grey(v) for v in (0, 128, 255)]])
    assert torch.allclose(x, _grey(expected, channels), atol=2 / 255)


def test_hsv() -> None:
    img = Image.new("HSV", (3, 1))
    for col, hue in enumerate((0, 85, 170)):  # 0°, 120°, 240°
        img.putpixel((col, 0), (hue, 255, 255))
    expected = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]]])
    assert torch.allclose(image_pixels(img, (1, 3), 3), _rgb(expected), atol=1 / 255)


def test_colour_to_grey_is_the_luma() -> None:
    img = Image.new("HSV", (1, 1), (0, 255, 255))  # red
    assert image_pixels(img, (1, 1), 1).item() == pytest.approx(0.299, abs=1 / 255)


# --- refusals and odd shapes ------------------------------------------------------------------


def test_an_unreadable_mode_is_refused_naming_it() -> None:
    img = Image.new("La", (2, 2))
    assert "La" not in READABLE_MODES
    with pytest.raises(GradleakError, match="image file odd.png has image mode 'La'"):
        image_pixels(img, (2, 2), 3, "image file odd.png")


def test_a_folder_given_as_an_image(tmp_path: Path) -> None:
    (tmp_path / "pics.png").mkdir()
    with pytest.raises(GradleakError, match="is a folder, not an image"):
        load_image(tmp_path / "pics.png", (4, 4), 3)


def test_an_extremely_elongated_image_is_refused_before_scaling() -> None:
    img = Image.new("L", (100_000, 1))
    with pytest.raises(GradleakError, match=f"more than {MAX_SCALED_PIXELS} pixels"):
        image_pixels(img, (64, 64), 1)
    # A merely elongated one is scaled and cropped as usual.
    assert image_pixels(Image.new("L", (10_000, 1), 9), (8, 8), 1).shape == (1, 8, 8)


@pytest.mark.parametrize("size", [(0, 4), (4097, 4), (4, True), (2.5, 4)])
def test_sizes_outside_the_range_are_refused(size: tuple[int, int]) -> None:
    with pytest.raises(GradleakError, match=r"two integers \(H, W\) in 1\.\.4096"):
        image_pixels(Image.new("L", (4, 4)), size, 1)


def test_a_16_bit_image_in_an_image_folder(tmp_path: Path) -> None:
    (tmp_path / "cls").mkdir()
    Image.fromarray(SIXTEEN).save(tmp_path / "cls" / "a.png")
    x, label = load_image_folder(tmp_path, (2, 4), 3)[0]
    assert label == 0 and torch.equal(x, _grey(SIXTEEN / 65535, 3))
