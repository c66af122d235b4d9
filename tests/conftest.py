"""Fixtures shared across the test tree: the real-data folder and a one-thread torch."""

from __future__ import annotations

import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import settings as hypothesis_settings
from hypothesis.configuration import set_hypothesis_home_dir
from PIL import Image

# The property tests draw the same inputs on every run (a CI result never depends on luck)
# and keep no example database; hypothesis's caches go to the temporary folder, not the tree.
hypothesis_settings.register_profile("gradleak", derandomize=True, database=None)
hypothesis_settings.load_profile("gradleak")
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "gradleak-hypothesis")


def pytest_configure(config: pytest.Config) -> None:
    """Let Ctrl-C reach the tests even when the suite was started with SIGINT ignored.

    A shell starts background jobs (`cmd &`, nohup, some CI runners) with SIGINT ignored,
    and Python then installs no KeyboardInterrupt handler; the signal tests send SIGINT to
    this process and to the commands it starts, which inherit an ignored signal but not a
    handler. Installing Python's own handler here restores what an interactive run has.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


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


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """Two classes of four 32×32 noise images each: a dataset that needs no shared data."""
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True)
        for i in range(4):
            pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / label / f"{i}.png")
    return root
