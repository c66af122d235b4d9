"""SnapshotRecorder: which observations it keeps, what it writes; default snapshot iterations."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from gradleak import attacks
from gradleak.attacks.engine.trials import best_trial
from gradleak.core.errors import GradleakError
from gradleak.fl import FedSGDClient
from gradleak.modalities import get_modality
from gradleak.scenario import RunConfig, build_case
from gradleak.scenario.snapshots import SnapshotRecorder, default_snapshot_iterations

IMAGES = get_modality("image")


def _pixels(value: float, batch: int = 1) -> torch.Tensor:
    return torch.full((batch, 3, 8, 8), value)


def test_records_the_first_observation_at_or_after_each_request() -> None:
    recorder = SnapshotRecorder([100, 0, 10, 30])
    for iteration in range(4, 121, 4):  # logged every 4 iterations, starting at 4
        recorder.observe(iteration, _pixels(iteration / 200))
    recorder.observe_final(123, _pixels(0.9))
    snapshots = recorder.snapshots
    assert list(snapshots) == [4, 12, 32, 100, 123]
    for iteration in (4, 12, 32, 100):
        assert torch.equal(snapshots[iteration], _pixels(iteration / 200))
    assert torch.equal(snapshots[123], _pixels(0.9))
    assert recorder.final_iteration == 123


def test_one_observation_can_fill_several_requests() -> None:
    recorder = SnapshotRecorder([5, 6, 7, 50])
    assert not recorder.wants(4)
    recorder.observe(4, _pixels(0.1))
    assert recorder.wants(10)
    recorder.observe(10, _pixels(0.2))
    recorder.observe(20, _pixels(0.3))  # nothing outstanding between 10 and 50
    assert list(recorder.snapshots) == [10]
    recorder.observe(60, _pixels(0.4))
    assert list(recorder.snapshots) == [10, 60]
    assert not recorder.wants(1000)


def test_final_is_always_recorded_and_replaces_the_same_iteration() -> None:
    recorder = SnapshotRecorder([])
    recorder.observe(3, _pixels(0.1))
    assert recorder.snapshots == {}
    recorder.observe_final(3, _pixels(0.5))
    assert list(recorder.snapshots) == [3]

    recorder = SnapshotRecorder([0, 5])
    recorder.observe(5, _pixels(0.1))
    recorder.observe_final(5, _pixels(0.7))
    assert list(recorder.snapshots) == [5]
    assert torch.equal(recorder.snapshots[5], _pixels(0.7))


def test_keeps_a_detached_cpu_copy() -> None:
    recorder = SnapshotRecorder([0])
    pixels = _pixels(0.25).requires_grad_(True)
    recorder.observe(0, pixels)
    with torch.no_grad():
        pixels.add_(0.5)
    stored = recorder.snapshots[0]
    assert stored.device.type == "cpu"
    assert not stored.requires_grad
    assert torch.equal(stored, _pixels(0.25))


def test_save_writes_strips_and_index(tmp_path) -> None:
    recorder = SnapshotRecorder([0, 10])
    recorder.observe(2, torch.rand(2, 3, 32, 32))
    recorder.observe(12, torch.rand(2, 3, 32, 32))
    nan_pixels = torch.rand(2, 3, 32, 32)
    nan_pixels[0, 0, 0, 0] = float("nan")  # a diverged iterate still gets a picture
    recorder.observe_final(15, nan_pixels)
    index = recorder.save(tmp_path / "run", IMAGES)

    expected = [
        {"iteration": 2, "file": "snapshots/iter_000002.png"},
        {"iteration": 12, "file": "snapshots/iter_000012.png"},
        {"iteration": 15, "file": "snapshots/iter_000015.png"},
    ]
    assert index == expected
    assert json.loads((tmp_path / "run" / "snapshots.json").read_text()) == expected
    for entry in expected:
        with Image.open(tmp_path / "run" / entry["file"]) as image:
            assert image.format == "PNG"
            # Two 32-pixel images side by side, enlarged 4× with a 2-pixel gap.
            assert image.size == (2 * 128 + 2, 128)


def test_save_with_nothing_recorded_writes_an_empty_index(tmp_path) -> None:
    SnapshotRecorder([0]).save(tmp_path, IMAGES)
    assert json.loads((tmp_path / "snapshots.json").read_text()) == []


@pytest.mark.parametrize("iterations", [[-1], [1.5], [True], ["3"]])
def test_bad_requested_iterations(iterations) -> None:
    with pytest.raises(GradleakError, match="non-negative integers"):
        SnapshotRecorder(iterations)


@pytest.mark.parametrize("pixels", [torch.rand(3), torch.rand(0, 3, 8, 8), "image"])
def test_bad_pixels(pixels) -> None:
    recorder = SnapshotRecorder([0])
    with pytest.raises(GradleakError, match="B×C×H×W"):
        recorder.observe(0, pixels)
    with pytest.raises(GradleakError, match="B×C×H×W"):
        recorder.observe_final(0, pixels)


def test_recorder_hooked_into_a_real_attack(tmp_path, one_thread) -> None:
    case = build_case(RunConfig(progress=False))
    attack = attacks.get("dlg").with_options({"iterations": 6})
    update = FedSGDClient(case.server.model).compute_update(case.client.batch)
    recorder = SnapshotRecorder(default_snapshot_iterations(6))

    def observe(iteration, losses, images):
        if recorder.wants(iteration):
            recorder.observe(iteration, case.server.decode(images[best_trial(losses)]))
        return {}

    rec = attack.reconstruct(
        update, case.server.model, case.server.knowledge, observer=observe, progress=False
    )
    recorder.observe_final(rec.iterations, case.server.decode(rec.images))
    logged = {row["iteration"] for row in rec.history}
    assert set(recorder.snapshots) <= logged | {rec.iterations}
    assert max(recorder.snapshots) == rec.iterations == recorder.final_iteration
    assert len(recorder.snapshots) >= 3
    index = recorder.save(tmp_path, IMAGES)
    assert all((tmp_path / entry["file"]).is_file() for entry in index)


@pytest.mark.parametrize(
    ("total", "expected"),
    [
        (0, [0]),
        (1, [0, 1]),
        (20, [0, 1, 2, 5, 10, 20]),
        (300, [0, 3, 10, 30, 100, 300]),
        (1000, [0, 10, 30, 100, 300, 1000]),
        (24000, [0, 250, 750, 2500, 7500, 24000]),
    ],
)
def test_default_snapshot_iterations_examples(total, expected) -> None:
    assert default_snapshot_iterations(total) == expected


@pytest.mark.parametrize("count", [1, 2, 3, 6, 10])
@pytest.mark.parametrize("total", [0, 1, 2, 5, 7, 50, 132, 300, 999, 2000, 24000, 10**6])
def test_default_snapshot_iterations_are_sane(total, count) -> None:
    points = default_snapshot_iterations(total, count)
    assert points[0] == 0
    assert points == sorted(set(points))
    assert all(isinstance(p, int) and 0 <= p <= total for p in points)
    assert len(points) <= count
    if count >= 2:
        assert points[-1] == total
    # Log-spaced: no gap between non-zero points is more than about √10 (after rounding).
    nonzero = [p for p in points if p > 0]
    assert all(b / a <= 4.5 for a, b in zip(nonzero, nonzero[1:], strict=False))


@pytest.mark.parametrize(("total", "count"), [(-1, 6), (10, 0), (2.5, 6)])
def test_default_snapshot_iterations_rejects_bad_input(total, count) -> None:
    with pytest.raises(GradleakError):
        default_snapshot_iterations(total, count)
