"""The image modality against values worked out by hand: decoding, the pixel box, the dummy
inputs, the total-variation prior and its weight, the running scores and the pictures."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gradleak.core.errors import GradleakError
from gradleak.core.knowledge import Knowledge
from gradleak.modalities import MODALITIES, ImageModality, get_modality
from gradleak.report.images import GAP_PX

pytestmark = pytest.mark.usefixtures("one_thread")

MEAN = (0.5, 0.25, 0.75)
STD = (0.5, 0.25, 0.125)
IMAGE = ImageModality()


def _knowledge(channels: int = 3) -> Knowledge:
    return Knowledge(
        data_shape=(channels, 4, 4),
        num_classes=10,
        batch_size=1,
        mean=MEAN[:channels],
        std=STD[:channels],
    )


# --- decode and bounds ------------------------------------------------------------------------


def test_decode_inverts_the_normalisation_channel_by_channel() -> None:
    # x·std + mean per channel: channel 0 (0.5, 0.5), channel 1 (0.25, 0.25),
    # channel 2 (0.75, 0.125).
    inputs = torch.tensor([[0.0, 0.5], [-0.5, -1.0]]).expand(1, 3, 2, 2).clone()
    expected = torch.tensor(
        [
            [[0.5, 0.75], [0.25, 0.0]],
            [[0.25, 0.375], [0.125, 0.0]],
            [[0.75, 0.8125], [0.6875, 0.625]],
        ]
    ).unsqueeze(0)
    torch.testing.assert_close(IMAGE.decode(inputs, _knowledge()), expected)


def test_decode_clamps_to_the_unit_interval() -> None:
    # Channel 0: 3·0.5 + 0.5 = 2 → 1, −3·0.5 + 0.5 = −1 → 0; channel 2: −7·0.125 + 0.75 → 0.
    inputs = torch.zeros(2, 3, 1, 1)
    inputs[0, :, 0, 0] = torch.tensor([3.0, 10.0, 4.0])
    inputs[1, :, 0, 0] = torch.tensor([-3.0, -10.0, -7.0])
    decoded = IMAGE.decode(inputs, _knowledge())
    assert decoded[0].flatten().tolist() == [1.0, 1.0, 1.0]
    assert decoded[1].flatten().tolist() == [0.0, 0.0, 0.0]


def test_bounds_are_the_normalised_pixels_zero_and_one() -> None:
    lower, upper = IMAGE.bounds(_knowledge())
    assert lower.shape == upper.shape == (3, 1, 1)
    # (0 − mean)/std and (1 − mean)/std: (−1, 1), (−1, 3), (−6, 2).
    assert lower.flatten().tolist() == [-1.0, -1.0, -6.0]
    assert upper.flatten().tolist() == [1.0, 3.0, 2.0]
    # Decoding the bounds gives pixels 0 and 1 exactly.
    box = torch.stack([lower.expand(3, 2, 2), upper.expand(3, 2, 2)])
    decoded = IMAGE.decode(box, _knowledge())
    assert torch.equal(decoded[0], torch.zeros(3, 2, 2))
    assert torch.equal(decoded[1], torch.ones(3, 2, 2))


# --- initial inputs ---------------------------------------------------------------------------

SHAPE = (2, 3, 1, 4, 4)  # trials × batch × one input


def test_randn_inputs_are_the_seeded_standard_normal() -> None:
    drawn = IMAGE.initial_inputs("randn", SHAPE, torch.Generator().manual_seed(5))
    assert drawn.shape == SHAPE
    expected = torch.randn(SHAPE, generator=torch.Generator().manual_seed(5))
    assert torch.equal(drawn, expected)
    other = IMAGE.initial_inputs("randn", SHAPE, torch.Generator().manual_seed(6))
    assert not torch.equal(drawn, other)


def test_uniform_inputs_lie_in_minus_half_to_half_and_repeat_with_the_seed() -> None:
    shape = (4, 2, 3, 8, 8)
    first = IMAGE.initial_inputs("uniform", shape, torch.Generator().manual_seed(1))
    again = IMAGE.initial_inputs("uniform", shape, torch.Generator().manual_seed(1))
    assert first.shape == shape
    assert torch.equal(first, again)
    assert float(first.min()) >= -0.5 and float(first.max()) < 0.5
    # 1536 draws cover the interval: both halves are used.
    assert float(first.min()) < -0.4 and float(first.max()) > 0.4
    expected = torch.rand(shape, generator=torch.Generator().manual_seed(1)) - 0.5
    assert torch.equal(first, expected)


def test_zeros_inputs_are_zero_and_draw_nothing() -> None:
    generator = torch.Generator().manual_seed(3)
    state = generator.get_state()
    zeros = IMAGE.initial_inputs("zeros", SHAPE, generator)
    assert zeros.shape == SHAPE
    assert not zeros.any()
    assert torch.equal(generator.get_state(), state)


# --- the prior and its weight -----------------------------------------------------------------


def test_prior_is_total_variation_worked_by_hand() -> None:
    # Horizontal neighbours: |2−1|, |4−2|, |3−0|, |3−3| → mean 6/4 = 1.5.
    # Vertical neighbours:   |0−1|, |3−2|, |3−4|         → mean 3/3 = 1.
    image = torch.tensor([[1.0, 2.0, 4.0], [0.0, 3.0, 3.0]]).reshape(1, 1, 2, 3)
    assert float(IMAGE.prior(image)) == pytest.approx(2.5)


def test_prior_averages_over_channels_and_images() -> None:
    # Image 0 is flat (TV 0); image 1 has a vertical edge of height 2 in one of two channels:
    # every row has one jump of 2 among 2 horizontal pairs, no vertical change.
    flat = torch.zeros(1, 2, 2, 3)
    edge = torch.zeros(1, 2, 2, 3)
    edge[0, 1, :, 2] = 2.0
    batch = torch.cat([flat, edge])
    # dx: 2 channels × 2 images × 2 rows × 2 pairs = 16 pairs, 2 of them jump by 2 → 4/16.
    assert float(IMAGE.prior(batch)) == pytest.approx(0.25)
    assert float(IMAGE.prior(flat)) == 0.0


@pytest.mark.parametrize(
    ("shape", "weight"),
    [
        ((3, 32, 32), 0.05),
        ((1, 28, 28), 0.05),
        ((3, 63, 63), 0.05),
        ((3, 64, 32), 0.05),  # the shorter side decides
        ((3, 64, 64), 1e-1),
        ((3, 224, 224), 1e-1),
    ],
)
def test_default_prior_weight_by_image_side(shape: tuple[int, int, int], weight: float) -> None:
    assert IMAGE.default_prior_weight(shape) == weight


# --- running scores ---------------------------------------------------------------------------


def test_progress_matches_a_permuted_batch_and_scores_it_by_hand() -> None:
    truth = torch.stack([torch.full((3, 2, 2), v) for v in (0.1, 0.5, 0.9)])
    offsets = torch.tensor([0.1, 0.05, 0.02])  # reconstruction i misses truth i by offsets[i]
    perm = [2, 0, 1]  # recon[j] reconstructs truth[perm[j]]
    recon = torch.stack([truth[perm[j]] + offsets[perm[j]] for j in range(3)])
    order, columns = IMAGE.progress(recon, truth)
    # recon[order[i]] reconstructs truth[i]: the inverse permutation.
    assert order.tolist() == [1, 2, 0]
    errors = [0.1**2, 0.05**2, 0.02**2]
    assert columns["mse"] == pytest.approx(sum(errors) / 3, rel=1e-5)
    psnrs = [10 * math.log10(1 / e) for e in errors]
    assert columns["psnr"] == pytest.approx(sum(psnrs) / 3, rel=1e-5)
    assert set(columns) == {"psnr", "mse"}


# --- pictures ---------------------------------------------------------------------------------

SIDE = 4
SCALE = 32  # 4-pixel tiles are enlarged to 128 pixels (MIN_DISPLAY_HEIGHT_PX)


def _pixels(seed: int, count: int) -> torch.Tensor:
    """Images whose values are whole 8-bit levels, so a PNG holds them exactly."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, 3, SIDE, SIDE), generator=g).float() / 255.0


def _tile(canvas: np.ndarray, row: int, column: int) -> np.ndarray:
    """The tile at (row, column) sampled back to SIDE×SIDE×3 8-bit values."""
    step = SIDE * SCALE + GAP_PX
    top, left = row * step, column * step
    rows = top + np.arange(SIDE) * SCALE
    cols = left + np.arange(SIDE) * SCALE
    return canvas[np.ix_(rows, cols)]


def _levels(image: torch.Tensor) -> np.ndarray:
    return (image.permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)


def test_render_run_writes_the_matched_strip_and_the_grid(tmp_path: Path) -> None:
    truth, recon = _pixels(0, 3), _pixels(1, 3)
    matching = [2, 0, 1]
    IMAGE.render_run(tmp_path, truth, recon, matching)

    strip = np.asarray(Image.open(tmp_path / "reconstruction.png").convert("RGB"))
    width = 3 * SIDE * SCALE + 2 * GAP_PX
    assert strip.shape == (SIDE * SCALE, width, 3)
    for column, j in enumerate(matching):
        np.testing.assert_array_equal(_tile(strip, 0, column), _levels(recon[j]))
    # The gaps between tiles are white.
    assert (strip[:, SIDE * SCALE : SIDE * SCALE + GAP_PX] == 255).all()

    grid = np.asarray(Image.open(tmp_path / "grid.png").convert("RGB"))
    assert grid.shape == (2 * SIDE * SCALE + GAP_PX, width, 3)
    for column, j in enumerate(matching):
        np.testing.assert_array_equal(_tile(grid, 0, column), _levels(truth[column]))
        np.testing.assert_array_equal(_tile(grid, 1, column), _levels(recon[j]))


def test_every_tile_pixel_is_one_enlarged_input_pixel(tmp_path: Path) -> None:
    recon = _pixels(2, 1)
    IMAGE.render_run(tmp_path, recon, recon, [0])
    strip = np.asarray(Image.open(tmp_path / "reconstruction.png").convert("RGB"))
    enlarged = _levels(recon[0]).repeat(SCALE, axis=0).repeat(SCALE, axis=1)
    np.testing.assert_array_equal(strip, enlarged)


def test_snapshot_file_names_the_iteration() -> None:
    assert IMAGE.snapshot_file(7) == "snapshots/iter_000007.png"
    assert IMAGE.snapshot_file(24_000) == "snapshots/iter_024000.png"


def test_render_snapshot_shows_nan_as_black(tmp_path: Path) -> None:
    decoded = _pixels(3, 2)
    decoded[0, :, 1, 2] = torch.nan
    decoded[1, 0, 3, 3] = torch.nan
    path = tmp_path / IMAGE.snapshot_file(12)
    IMAGE.render_snapshot(decoded, path)
    assert path.is_file()
    picture = np.asarray(Image.open(path).convert("RGB"))
    expected = [_levels(torch.nan_to_num(image, nan=0.0)) for image in decoded]
    np.testing.assert_array_equal(_tile(picture, 0, 0), expected[0])
    np.testing.assert_array_equal(_tile(picture, 0, 1), expected[1])
    assert _tile(picture, 0, 0)[1, 2].tolist() == [0, 0, 0]
    assert _tile(picture, 0, 1)[3, 3, 0] == 0
    # The caller's tensor is left as it was.
    assert torch.isnan(decoded[0, 0, 1, 2])


def test_grey_images_render_as_one_channel(tmp_path: Path) -> None:
    grey = _pixels(4, 2)[:, :1]
    IMAGE.render_run(tmp_path, grey, grey, [0, 1])
    picture = Image.open(tmp_path / "reconstruction.png")
    assert picture.mode == "L"
    levels = np.asarray(picture)
    for column in range(2):
        tile = _tile(levels[..., None], 0, column)[..., 0]
        np.testing.assert_array_equal(tile, _levels(grey[column])[..., 0])


# --- the registry -----------------------------------------------------------------------------


def test_image_is_the_registered_image_modality() -> None:
    modality = get_modality("image")
    assert modality is MODALITIES["image"]
    assert isinstance(modality, ImageModality)
    assert modality.name == "image"


def test_an_unknown_modality_is_a_one_line_error_naming_the_choices() -> None:
    with pytest.raises(GradleakError) as exc:
        get_modality("audio")
    message = str(exc.value)
    assert "\n" not in message
    assert "'audio'" in message
    assert message.endswith("choose one of: " + ", ".join(MODALITIES))
