"""Fixtures shared by the defense tests."""

from __future__ import annotations

import pytest
import torch

from gradleak.core.update import SharedUpdate, UpdateKind


@pytest.fixture
def update() -> SharedUpdate:
    """A small update of distinct, non-zero entries, with metadata and a non-default kind."""
    g = torch.Generator().manual_seed(123)
    tensors = {
        "conv.weight": torch.randn(4, 3, 5, 5, generator=g),
        "conv.bias": torch.randn(4, generator=g),
        "fc.weight": torch.randn(10, 64, generator=g),
        "fc.bias": torch.randn(10, generator=g),
    }
    return SharedUpdate(tensors, UpdateKind.WEIGHT_DELTA, {"num_samples": 8, "lr": 0.1})
