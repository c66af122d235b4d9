"""Sizes and counts that would exhaust memory or hang are refused in one line, from any source."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from gradleak.cli import flags
from gradleak.core.errors import GradleakError
from gradleak.data import input_shape
from gradleak.models import build_model
from gradleak.scenario.config import (
    MAX_LOCAL_STEPS,
    MAX_ROUNDS,
    MAX_SAMPLES,
    load_run_config,
)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"image_size": 10**6},
            r"--image-size must be at most 4096, got 1000000 \(allowed: 4\.\.4096\)",
        ),
        ({"image_size": 2}, r"--image-size must be at least 4, got 2 \(allowed: 4\.\.4096\)"),
        (
            {"batch_size": 10**9},
            f"batch size 1000000000 is 1000000000 images; .* at most {MAX_SAMPLES}",
        ),
        (
            {"batch_size": 1000, "users": 1000},
            "1000 user\\(s\\) × batch size 1000 is 1000000 images",
        ),
        ({"image": "x.png", "label": 10**30}, r"--label must be in 0\.\.99999"),
        ({"protocol": "fedavg", "rounds": 10**9}, f"--rounds must be in 1..{MAX_ROUNDS}"),
        ({"protocol": "fedavg", "local_steps": 10**12}, "the clients' local training takes"),
        (
            {"protocol": "fedavg", "batch_size": 8, "local_batch_size": 1, "local_epochs": 2000},
            f"takes 16000 steps a round; at most {MAX_LOCAL_STEPS}",
        ),
        (
            {"protocol": "fedavg", "local_steps": 2, "guess_local_epochs": 10**9},
            "the attacker's local training takes 1000000000 steps",
        ),
    ],
)
def test_absurd_settings_are_refused_before_any_work(
    overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(GradleakError, match=message) as err:
        load_run_config(None, overrides)
    assert "\n" not in str(err.value)


def test_the_bounds_apply_to_config_files(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("dataset: folder\nimage_size: 100000\n")
    with pytest.raises(GradleakError, match="--image-size must be at most 4096"):
        load_run_config(path, {})


def test_settings_at_the_bounds_pass() -> None:
    load_run_config(None, {"dataset": "folder", "image_size": 4096})
    load_run_config(None, {"protocol": "fedavg", "local_steps": MAX_LOCAL_STEPS})
    load_run_config(None, {"protocol": "fedavg", "rounds": MAX_ROUNDS})


@pytest.mark.parametrize(("threads", "bound"), [(0, "at least 1"), (10**6, "at most 1024")])
def test_threads_outside_the_range_are_refused(threads: int, bound: str) -> None:
    before = torch.get_num_threads()
    for in_this_process in (True, False):
        with pytest.raises(GradleakError) as err:
            flags.apply_threads(threads, in_this_process=in_this_process)
        assert str(err.value) == (
            f"--threads must be {bound}, got {threads} (allowed: 1..{flags.MAX_THREADS})"
        )
    assert torch.get_num_threads() == before


def test_a_model_larger_than_memory_is_refused_before_its_weights_are_drawn() -> None:
    # Tens of terabytes: more than any machine's memory.
    with pytest.raises(GradleakError, match=r"model mlp2-100000 has \d+ parameters .* GiB"):
        build_model("mlp-100000", num_classes=10, image_size=(4096, 4096))
    with pytest.raises(GradleakError, match="model convnet-1000000 has"):
        build_model("convnet-1000000", num_classes=10)


def test_folder_images_larger_than_the_bound_are_refused_for_every_command() -> None:
    # The one description of a dataset's input shape, which training reads too.
    assert input_shape("folder", 4096) == (3, (4096, 4096))
    with pytest.raises(GradleakError, match=r"--image-size must be in 1\.\.4096, got 5000"):
        input_shape("folder", 5000)
