"""Fixtures shared across the test tree: the real-data folder and a one-thread torch."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """The shared real-data folder; tests that need it are skipped where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA.resolve()} is not present")
    return SHARED_DATA.resolve()


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Run torch on one intra-op thread for the duration of a test module.

    The attack tests run many tiny kernels (LeNet on one 32×32 image); on a loaded two-core
    machine OpenMP threads that spin-wait for each other make them tens of times slower.
    One thread gives the same numbers run after run and keeps the suite fast.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
