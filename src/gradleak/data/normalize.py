"""Per-channel normalisation between [0, 1] pixels and the space models and attacks use."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from gradleak.core.errors import GradleakError


def _stats(x: Tensor | None, mean: Sequence[float], std: Sequence[float]) -> tuple[Tensor, Tensor]:
    """Mean and std as C×1×1 tensors matching `x` (float32 on CPU when `x` is None)."""
    if len(mean) != len(std):
        raise GradleakError(
            f"mean has {len(mean)} channels but std has {len(std)}; give one value per channel"
        )
    if any(s <= 0 for s in std):
        raise GradleakError(f"std values must be positive, got {tuple(std)}")
    if x is not None and (x.ndim < 3 or x.shape[-3] != len(mean)):
        raise GradleakError(
            f"expected a tensor ...×C×H×W with C={len(mean)} channels, got shape {tuple(x.shape)}"
        )
    dtype = x.dtype if x is not None and x.is_floating_point() else torch.float32
    device = x.device if x is not None else torch.device("cpu")
    m = torch.tensor(tuple(mean), dtype=dtype, device=device).view(-1, 1, 1)
    s = torch.tensor(tuple(std), dtype=dtype, device=device).view(-1, 1, 1)
    return m, s


def normalize(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Map [0, 1] pixels to (x - mean) / std per channel."""
    m, s = _stats(x, mean, std)
    return (x - m) / s


def denormalize(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Map normalised values back to pixel space: x * std + mean (no clamping)."""
    m, s = _stats(x, mean, std)
    return x * s + m


def pixel_bounds(mean: Sequence[float], std: Sequence[float]) -> tuple[Tensor, Tensor]:
    """Per-channel (lower, upper), each C×1×1, of the [0, 1] pixel box in normalised space."""
    m, s = _stats(None, mean, std)
    return (0.0 - m) / s, (1.0 - m) / s
