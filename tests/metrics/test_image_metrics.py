import math

import numpy as np
import pytest
import torch
from scipy.signal import correlate2d

from gradleak.core.errors import GradleakError
from gradleak.metrics import PSNR_CEILING_DB, mse, psnr, ssim


def _const(value: float, shape=(1, 3, 16, 16)) -> torch.Tensor:
    return torch.full(shape, value, dtype=torch.float64)


def _reference_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """Textbook SSIM of one C×H×W pair: 11×11 Gaussian σ=1.5, valid windows only."""
    offsets = np.arange(11) - 5
    g = np.exp(-(offsets**2) / (2 * 1.5**2))
    window = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = 0.01**2, 0.03**2
    scores = []
    for xc, yc in zip(x, y, strict=True):

        def smooth(a, xc=xc, yc=yc):
            return correlate2d(a, window, mode="valid")

        mx, my = smooth(xc), smooth(yc)
        vx = smooth(xc * xc) - mx**2
        vy = smooth(yc * yc) - my**2
        cxy = smooth(xc * yc) - mx * my
        s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
        scores.append(s.mean())
    return float(np.mean(scores))


def test_constant_offset_gives_known_mse_and_20_db():
    x, y = _const(0.3), _const(0.4)
    assert mse(x, y).item() == pytest.approx(0.01, abs=1e-12)
    assert psnr(x, y).item() == pytest.approx(20.0, abs=1e-9)


def test_psnr_is_averaged_per_image_not_taken_of_mean_mse():
    truth = torch.cat([_const(0.5), _const(0.5)])
    recon = torch.cat([_const(0.6), _const(0.51)])  # MSE 1e-2 (20 dB) and 1e-4 (40 dB)
    per_image = psnr(recon, truth)
    assert per_image.tolist() == pytest.approx([20.0, 40.0], abs=1e-9)
    assert per_image.mean().item() == pytest.approx(30.0, abs=1e-9)
    psnr_of_mean_mse = 10 * math.log10(1 / mse(recon, truth).mean().item())
    assert psnr_of_mean_mse == pytest.approx(22.9671, abs=1e-4)  # the convention we avoid


def test_identical_images_hit_the_psnr_ceiling_and_ssim_one():
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert mse(x, x).tolist() == [0.0, 0.0]
    assert psnr(x, x).tolist() == [PSNR_CEILING_DB, PSNR_CEILING_DB]
    assert PSNR_CEILING_DB == 100.0
    assert ssim(x, x).tolist() == pytest.approx([1.0, 1.0], abs=1e-12)


def test_psnr_is_capped_just_below_floor_and_exact_above_it():
    # MSE 1e-12 would be 120 dB; it is capped. MSE 1e-8 (offset 1e-4) is 80 dB, uncapped.
    assert psnr(_const(0.5), _const(0.5 + 1e-6)).item() == PSNR_CEILING_DB
    assert psnr(_const(0.5), _const(0.5 + 1e-4)).item() == pytest.approx(80.0, abs=1e-6)


def test_values_outside_unit_range_are_clamped_before_scoring():
    # 1.5 is scored as 1.0: MSE (1.0 - 0.8)^2 = 0.04, PSNR 10·log10(25).
    assert mse(_const(1.5), _const(0.8)).item() == pytest.approx(0.04, abs=1e-12)
    assert psnr(_const(1.5), _const(0.8)).item() == pytest.approx(13.979400087, abs=1e-8)
    # -0.5 is scored as 0.0, +inf as 1.0.
    assert mse(_const(-0.5), _const(0.1)).item() == pytest.approx(0.01, abs=1e-12)
    assert mse(_const(math.inf), _const(1.0)).item() == 0.0
    # Clamping both sides: a far-out reconstruction of a white image is exact.
    assert ssim(_const(7.0), _const(1.0)).item() == pytest.approx(1.0, abs=1e-12)


def test_ssim_of_constant_images_is_the_luminance_term():
    # Zero variance leaves (2ab + C1) / (a^2 + b^2 + C1).
    c1 = 0.01**2
    expected = (2 * 0.25 * 0.75 + c1) / (0.25**2 + 0.75**2 + c1)
    assert ssim(_const(0.25), _const(0.75)).item() == pytest.approx(expected, abs=1e-10)


def test_ssim_of_image_and_its_negative_is_negative():
    x = torch.rand(1, 1, 24, 24, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    score = ssim(x, 1 - x).item()
    assert score < -0.5
    assert score == pytest.approx(_reference_ssim(x[0].numpy(), 1 - x[0].numpy()), abs=1e-4)


def test_ssim_matches_independent_reference():
    gen = torch.Generator().manual_seed(2)
    truth = torch.rand(3, 3, 20, 24, generator=gen, dtype=torch.float64)
    recon = (truth + 0.15 * torch.randn(truth.shape, generator=gen, dtype=torch.float64)).clamp(
        0, 1
    )
    ours = ssim(recon, truth)
    for i in range(3):
        ref = _reference_ssim(recon[i].numpy(), truth[i].numpy())
        assert ours[i].item() == pytest.approx(ref, abs=1e-4)
    # float32 input gives the same numbers (scoring runs in float64).
    assert ssim(recon.float(), truth.float()).tolist() == pytest.approx(ours.tolist(), abs=1e-6)


def test_ssim_matches_scikit_image_when_available():
    metrics = pytest.importorskip("skimage.metrics")
    gen = torch.Generator().manual_seed(3)
    truth = torch.rand(1, 3, 16, 16, generator=gen, dtype=torch.float64)
    recon = (truth + 0.1 * torch.randn(truth.shape, generator=gen, dtype=torch.float64)).clamp(0, 1)
    expected = metrics.structural_similarity(
        recon[0].numpy(),
        truth[0].numpy(),
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=1,
        channel_axis=0,
    )
    assert ssim(recon, truth).item() == pytest.approx(expected, abs=1e-4)


def test_ssim_works_at_the_window_size_and_rejects_smaller_images():
    x = torch.rand(1, 1, 11, 11, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    assert ssim(x, x).item() == pytest.approx(1.0)
    assert ssim(x, 1 - x).item() == pytest.approx(
        _reference_ssim(x[0].numpy(), 1 - x[0].numpy()), abs=1e-4
    )
    with pytest.raises(GradleakError, match="at least 11×11"):
        ssim(_const(0.5, (1, 1, 8, 8)), _const(0.5, (1, 1, 8, 8)))


@pytest.mark.parametrize("fn", [mse, psnr, ssim])
def test_shape_mismatch_is_a_clear_error(fn):
    with pytest.raises(GradleakError, match="shape"):
        fn(_const(0.5, (2, 3, 16, 16)), _const(0.5, (2, 1, 16, 16)))


def test_bad_inputs_are_clear_errors():
    with pytest.raises(GradleakError, match="unsqueeze"):
        mse(_const(0.5)[0], _const(0.5)[0])
    with pytest.raises(GradleakError, match="255"):
        mse(torch.zeros(1, 1, 4, 4, dtype=torch.uint8), torch.zeros(1, 1, 4, 4, dtype=torch.uint8))
    with pytest.raises(GradleakError, match="NaN"):
        mse(_const(math.nan), _const(0.5))
    with pytest.raises(GradleakError, match="empty"):
        mse(torch.zeros(0, 1, 4, 4), torch.zeros(0, 1, 4, 4))
    with pytest.raises(GradleakError, match="torch.Tensor"):
        mse(np.zeros((1, 1, 4, 4)), _const(0.5, (1, 1, 4, 4)))


def test_ssim_matches_torchmetrics_valid_windows():
    # torchmetrics' Gaussian SSIM map, with its reflect-padded margin dropped, is the
    # valid-window SSIM: ours must give the same numbers without importing it.
    functional = pytest.importorskip("torchmetrics.functional.image")
    gen = torch.Generator().manual_seed(5)
    truth = torch.rand(2, 3, 32, 29, generator=gen, dtype=torch.float64)
    recon = (truth + 0.2 * torch.randn(truth.shape, generator=gen, dtype=torch.float64)).clamp(0, 1)
    _, full = functional.structural_similarity_index_measure(
        recon,
        truth,
        gaussian_kernel=True,
        kernel_size=11,
        sigma=1.5,
        data_range=1.0,
        reduction="none",
        return_full_image=True,
    )
    expected = full[..., 5:-5, 5:-5].flatten(1).mean(dim=1)
    assert ssim(recon, truth).tolist() == pytest.approx(expected.tolist(), abs=1e-10)
