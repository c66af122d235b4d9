"""Validation shared by the metric modules: turn user tensors into clamped float64 batches."""

from __future__ import annotations

import torch
from torch import Tensor

from gradleak.core.errors import GradleakError


def as_image_batch(images: Tensor, name: str) -> Tensor:
    """Check a B×C×H×W float batch; return it detached, on the CPU, float64, clamped to [0, 1]."""
    if not isinstance(images, Tensor):
        raise GradleakError(
            f"{name} must be a torch.Tensor, got {type(images).__name__}; "
            "convert it with torch.as_tensor"
        )
    if images.ndim != 4:
        hint = (
            "add a batch dimension with .unsqueeze(0)"
            if images.ndim == 3
            else "pass images as B×C×H×W"
        )
        raise GradleakError(
            f"{name} must be a B×C×H×W batch, got shape {tuple(images.shape)}; {hint}"
        )
    if not images.is_floating_point():
        raise GradleakError(
            f"{name} must be a float tensor in [0, 1], got {images.dtype}; "
            "divide 8-bit images by 255.0"
        )
    if images.shape[0] == 0 or images[0].numel() == 0:
        raise GradleakError(
            f"{name} is empty (shape {tuple(images.shape)}); pass at least one non-empty image"
        )
    if torch.isnan(images).any():
        raise GradleakError(
            f"{name} contains NaN; the attack probably diverged, lower its step size"
        )
    # float64 keeps exact cases exact (an offset of 0.1 must give 20 dB, not 19.99999).
    return images.detach().to("cpu", torch.float64).clamp(0.0, 1.0)


def image_pair(x: Tensor, y: Tensor, x_name: str = "x", y_name: str = "y") -> tuple[Tensor, Tensor]:
    """Validate two batches that are scored against each other image by image."""
    x64 = as_image_batch(x, x_name)
    y64 = as_image_batch(y, y_name)
    if x64.shape != y64.shape:
        raise GradleakError(
            f"{x_name} has shape {tuple(x64.shape)} but {y_name} has shape {tuple(y64.shape)}; "
            "pass one reconstruction per ground-truth image with the same C×H×W"
        )
    return x64, y64
