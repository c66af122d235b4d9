"""Per-image reconstruction quality: MSE, PSNR and SSIM on [0, 1] images."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics.functional.image import structural_similarity_index_measure

from gradleak.core.errors import GradleakError
from gradleak.metrics._checks import image_pair

PSNR_CEILING_DB = 100.0
"""PSNR reported for an exact (or numerically exact) reconstruction instead of +inf."""

# MSE at which 10·log10(1/MSE) reaches the ceiling; smaller errors are treated as exact so
# that PSNR stays finite, JSON-safe and averageable.
_MSE_FLOOR = 10.0 ** (-PSNR_CEILING_DB / 10.0)

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
_SSIM_MARGIN = SSIM_WINDOW // 2


def mse(x: Tensor, y: Tensor) -> Tensor:
    """Mean squared error of each image pair of two B×C×H×W batches; returns float64[B]."""
    x64, y64 = image_pair(x, y)
    return (x64 - y64).pow(2).flatten(1).mean(dim=1)


def psnr_from_mse(errors: Tensor) -> Tensor:
    """PSNR in dB for a peak of 1, capped at PSNR_CEILING_DB where the error is (near) zero."""
    return 10.0 * torch.log10(1.0 / errors.clamp_min(_MSE_FLOOR))


def psnr(x: Tensor, y: Tensor) -> Tensor:
    """PSNR in dB of each image pair (peak 1, capped at PSNR_CEILING_DB); returns float64[B]."""
    return psnr_from_mse(mse(x, y))


def ssim_supported(height: int, width: int) -> bool:
    """Whether images of this size hold at least one full SSIM window."""
    return height >= SSIM_WINDOW and width >= SSIM_WINDOW


def ssim(x: Tensor, y: Tensor) -> Tensor:
    """Gaussian-window SSIM (11×11, σ=1.5) of each image pair; returns float64[B].

    The SSIM map is averaged over the windows that lie fully inside the image (the
    standard definition, as in Wang et al. and scikit-image); channels are averaged.
    """
    x64, y64 = image_pair(x, y)
    height, width = x64.shape[-2:]
    if not ssim_supported(height, width):
        raise GradleakError(
            f"SSIM needs images of at least {SSIM_WINDOW}×{SSIM_WINDOW} pixels, got "
            f"{height}×{width}; score larger images or leave SSIM out"
        )
    # torchmetrics averages over a reflect-padded border; take its full map and drop the
    # padded margin so the score matches the standard valid-window definition. (With a
    # Gaussian kernel torchmetrics sizes the window from σ: 1.5 gives the standard 11.)
    _, full_map = structural_similarity_index_measure(
        x64,
        y64,
        gaussian_kernel=True,
        kernel_size=SSIM_WINDOW,
        sigma=SSIM_SIGMA,
        data_range=1.0,
        reduction="none",
        return_full_image=True,
    )
    m = _SSIM_MARGIN
    return full_map[..., m:-m, m:-m].flatten(1).mean(dim=1)
