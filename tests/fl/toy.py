"""The toy problem the protocol tests share: a double-precision MLP on 3×2×2 inputs, so
replays agree with the clients to rounding."""

from __future__ import annotations

import torch
from torch import nn

from gradleak.core.batch import PrivateBatch
from gradleak.core.knowledge import DataFacts

SHAPE = (3, 2, 2)
CLASSES = 4
FACTS = DataFacts(SHAPE, CLASSES, (0.5,) * 3, (0.25,) * 3, "toy")


def toy_model(seed: int = 0) -> nn.Module:
    """A small double-precision MLP, drawn from `seed` without touching the global RNG."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Flatten(), nn.Linear(12, 6), nn.Tanh(), nn.Linear(6, CLASSES)
        ).double()


def toy_batch(size: int, seed: int = 0) -> PrivateBatch:
    """`size` standard-normal inputs with labels 0, 1, …, cycling over the classes."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(size, *SHAPE, generator=g, dtype=torch.float64)
    return PrivateBatch(images, torch.arange(size) % CLASSES)
