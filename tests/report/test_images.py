import numpy as np
import pytest
import torch
from PIL import Image

from gradleak.core.errors import GradleakError
from gradleak.report import save_comparison_grid, save_image_strip, to_pil


def test_to_pil_grey_rounds_and_clamps():
    image = torch.tensor([[[0.0, 0.5, 1.0], [-1.0, 2.0, 0.2]]])  # 1×2×3
    pil = to_pil(image)
    assert pil.mode == "L"
    assert pil.size == (3, 2)
    # 0.5·255 = 127.5 rounds to 128; 0.2·255 = 51; out-of-range values clamp.
    assert np.asarray(pil).tolist() == [[0, 128, 255], [0, 255, 51]]


def test_to_pil_rgb_keeps_channel_order():
    image = torch.zeros(3, 2, 2)
    image[0, 0, 0] = 1.0  # red top-left
    image[2, 1, 1] = 1.0  # blue bottom-right
    pil = to_pil(image)
    assert pil.mode == "RGB"
    assert pil.getpixel((0, 0)) == (255, 0, 0)
    assert pil.getpixel((1, 1)) == (0, 0, 255)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (torch.zeros(2, 4, 4), "1 \\(grey\\) or 3"),
        (torch.zeros(1, 1, 4, 4), "C×H×W"),
        (torch.zeros(1, 4, 4, dtype=torch.uint8), "255"),
        (torch.full((1, 4, 4), float("nan")), "NaN"),
    ],
)
def test_to_pil_rejects_bad_images(image, message):
    with pytest.raises(GradleakError, match=message):
        to_pil(image)


def test_strip_auto_scale_and_white_gaps(tmp_path):
    images = torch.zeros(3, 3, 8, 8)
    path = tmp_path / "nested" / "strip.png"
    save_image_strip(images, path)
    with Image.open(path) as pil:
        # 8 px is enlarged 16× to 128 px; three tiles with two 2-px gaps.
        assert pil.size == (3 * 128 + 2 * 2, 128)
        assert pil.getpixel((127, 0)) == (0, 0, 0)
        assert pil.getpixel((128, 0)) == (255, 255, 255)
        assert pil.getpixel((129, 64)) == (255, 255, 255)
        assert pil.getpixel((130, 0)) == (0, 0, 0)


def test_strip_with_explicit_scale_keeps_large_images_and_grey_mode(tmp_path):
    images = torch.rand(2, 1, 5, 7, generator=torch.Generator().manual_seed(0))
    path = tmp_path / "strip.png"
    save_image_strip(images, path, scale=2)
    with Image.open(path) as pil:
        assert pil.mode == "L"
        assert pil.size == (2 * 14 + 2, 10)
        # Nearest neighbour: each source pixel becomes a 2×2 block.
        expected = round(images[1, 0, 4, 6].item() * 255)
        assert pil.getpixel((16 + 13, 9)) == expected
    save_image_strip(torch.zeros(1, 1, 200, 200), tmp_path / "big.png")
    with Image.open(tmp_path / "big.png") as pil:
        assert pil.size == (200, 200)


def test_strip_rejects_bad_scale(tmp_path):
    with pytest.raises(GradleakError, match="scale"):
        save_image_strip(torch.zeros(1, 1, 4, 4), tmp_path / "s.png", scale=0)


def test_comparison_grid_matches_columns(tmp_path):
    truth = torch.rand(3, 3, 4, 5, generator=torch.Generator().manual_seed(1))
    perm = torch.tensor([2, 0, 1])
    path = tmp_path / "out" / "grid.png"
    save_comparison_grid(truth, truth[perm], path, scale=3)
    with Image.open(path) as pil:
        assert pil.size == (3 * 15 + 2 * 2, 2 * 12 + 2)
        expected = tuple(round(v * 255) for v in truth[0, :, 0, 0].tolist())
        assert pil.getpixel((0, 0)) == expected
        # Below each truth image sits the reconstruction matched to it (here: identical).
        array = np.asarray(pil)
        assert np.array_equal(array[:12], array[14:])


def test_comparison_grid_uses_a_given_matching(tmp_path):
    truth = torch.zeros(2, 1, 2, 2)
    recon = torch.stack([torch.full((1, 2, 2), 1.0), torch.full((1, 2, 2), 0.5)])
    path = tmp_path / "grid.png"
    save_comparison_grid(truth, recon, path, scale=1, matching=[1, 0])
    with Image.open(path) as pil:
        assert pil.size == (2 * 2 + 2, 2 * 2 + 2)
        assert pil.getpixel((0, 4)) == 128  # recon[1] under truth 0
        assert pil.getpixel((4, 4)) == 255  # recon[0] under truth 1
    with pytest.raises(GradleakError, match="permutation"):
        save_comparison_grid(truth, recon, path, matching=[0, 0])


def test_comparison_grid_rejects_shape_mismatch(tmp_path):
    with pytest.raises(GradleakError, match="shape"):
        save_comparison_grid(torch.zeros(2, 1, 4, 4), torch.zeros(3, 1, 4, 4), tmp_path / "g.png")
