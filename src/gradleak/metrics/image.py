"""Per-image reconstruction quality: MSE, PSNR and SSIM on [0, 1] images."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from gradleak.core.errors import GradleakError
from gradleak.metrics._checks import image_pair

PSNR_CEILING_DB = 100.0
"""PSNR reported for an exact (or numerically exact) reconstruction instead of +inf."""

# MSE at which 10·log10(1/MSE) reaches the ceiling; smaller errors are treated as exact so
# that PSNR stays finite, JSON-safe and averageable.
_MSE_FLOOR = 10.0 ** (-PSNR_CEILING_DB / 10.0)

EXACT_PSNR_DB = 60.0
"""PSNR from which a reconstructed image counts as recovered exactly: an RMS error of at
most 1e-3 on [0, 1] pixels, a quarter of one 8-bit grey level, so the recovered image
rounds to the true one. Closed forms that are exact land far above it (float32 rounding
gives 100 dB or close); mixtures and approximations land far below."""

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
_SSIM_MARGIN = SSIM_WINDOW // 2
_SSIM_K1 = 0.01
_SSIM_K2 = 0.03


def mse(x: Tensor, y: Tensor) -> Tensor:
    """Mean squared error of each image pair of two B×C×H×W batches; returns float64[B].

    Both batches are clamped to [0, 1] and compared in float64 on the CPU; the error of a
    pair is averaged over its channels and pixels. The order of `x` and `y` does not
    matter.

    Args:
        x: images B×C×H×W, floating point, values in [0, 1] (others are clamped).
        y: images of the same shape, scored against `x` image by image.

    Returns:
        float64 tensor of shape [B]: the MSE of x[i] against y[i], in [0, 1].

    Raises:
        GradleakError: when `x` or `y` is not a B×C×H×W floating-point torch.Tensor.
        GradleakError: when `x` or `y` is empty or contains NaN.
        GradleakError: when `x` and `y` differ in shape.
    """
    x64, y64 = image_pair(x, y)
    return (x64 - y64).pow(2).flatten(1).mean(dim=1)


def psnr_from_mse(errors: Tensor) -> Tensor:
    """PSNR in dB for a peak of 1, capped at PSNR_CEILING_DB where the error is (near) zero.

    10·log10(1 / MSE) entrywise, with every MSE below 1e-10 (including 0) taken as 1e-10,
    so the result is at most PSNR_CEILING_DB (100 dB) and always finite. Nothing is
    checked: pass MSEs of [0, 1] images, e.g. from `mse`.

    Args:
        errors: mean squared errors, any shape, floating point.

    Returns:
        PSNRs in dB, of the same shape and dtype as `errors`.
    """
    return 10.0 * torch.log10(1.0 / errors.clamp_min(_MSE_FLOOR))


def psnr(x: Tensor, y: Tensor) -> Tensor:
    """PSNR in dB of each image pair (peak 1, capped at PSNR_CEILING_DB); returns float64[B].

    `psnr_from_mse(mse(x, y))`: images are clamped to [0, 1], and an exact reconstruction
    scores PSNR_CEILING_DB (100 dB) instead of +inf. Average the result yourself for a
    batch PSNR (the mean of per-image PSNRs, as `evaluate_images` reports).

    Args:
        x: images B×C×H×W, floating point, values in [0, 1] (others are clamped).
        y: images of the same shape, scored against `x` image by image.

    Returns:
        float64 tensor of shape [B]: the PSNR of x[i] against y[i], in dB, at most 100.

    Raises:
        GradleakError: when `x` or `y` is not a B×C×H×W floating-point torch.Tensor.
        GradleakError: when `x` or `y` is empty or contains NaN.
        GradleakError: when `x` and `y` differ in shape.
    """
    return psnr_from_mse(mse(x, y))


def ssim_supported(height: int, width: int) -> bool:
    """Whether images of this size hold at least one full SSIM window."""
    return height >= SSIM_WINDOW and width >= SSIM_WINDOW


def ssim(x: Tensor, y: Tensor) -> Tensor:
    """Gaussian-window SSIM (11×11, σ=1.5) of each image pair; returns float64[B].

    The SSIM map is averaged over the windows that lie fully inside the image (the
    standard definition, as in Wang et al. and scikit-image); channels are averaged.
    Constants K1 = 0.01, K2 = 0.03 and data range 1; images are clamped to [0, 1] and
    compared in float64 on the CPU.

    Args:
        x: images B×C×H×W, floating point, values in [0, 1] (others are clamped), each
            side at least 11 pixels.
        y: images of the same shape, scored against `x` image by image.

    Returns:
        float64 tensor of shape [B]: the SSIM of x[i] against y[i], at most 1 (1 for
        identical images).

    Raises:
        GradleakError: when `x` or `y` is not a B×C×H×W floating-point torch.Tensor.
        GradleakError: when `x` or `y` is empty or contains NaN.
        GradleakError: when `x` and `y` differ in shape.
        GradleakError: when the images are smaller than 11×11 pixels.
    """
    x64, y64 = image_pair(x, y)
    height, width = x64.shape[-2:]
    if not ssim_supported(height, width):
        raise GradleakError(
            f"SSIM needs images of at least {SSIM_WINDOW}×{SSIM_WINDOW} pixels, got "
            f"{height}×{width}; score larger images or leave SSIM out"
        )
    # Written here rather than taken from torchmetrics: importing torchmetrics costs seconds
    # (more with transformers installed), more than the whole attack of a small model, and
    # the valid-window SSIM is five separable Gaussian blurs. tests/metrics compares it with
    # torchmetrics and an independent reference.
    channels = x64.shape[1]
    g = _gaussian_window(x64)
    # x, y, x², y², xy blurred in one grouped convolution: each of the 5·C maps by itself.
    maps = torch.cat([x64, y64, x64 * x64, y64 * y64, x64 * y64], dim=1)
    groups = maps.shape[1]
    blurred = F.conv2d(maps, g.view(1, 1, -1, 1).expand(groups, 1, -1, 1), groups=groups)
    blurred = F.conv2d(blurred, g.view(1, 1, 1, -1).expand(groups, 1, 1, -1), groups=groups)
    mx, my, sxx, syy, sxy = blurred.split(channels, dim=1)
    vx, vy, cxy = sxx - mx * mx, syy - my * my, sxy - mx * my
    c1, c2 = _SSIM_K1**2, _SSIM_K2**2  # data range 1
    full_map = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return full_map.flatten(1).mean(dim=1)


def _gaussian_window(like: Tensor) -> Tensor:
    """The 1-D Gaussian of the SSIM window (SSIM_WINDOW taps, σ = SSIM_SIGMA), summing to 1,
    with the dtype and device of `like` (whatever torch's default device)."""
    offsets = torch.arange(SSIM_WINDOW, dtype=like.dtype, device=like.device) - _SSIM_MARGIN
    g = torch.exp(-(offsets**2) / (2 * SSIM_SIGMA**2))
    return g / g.sum()
