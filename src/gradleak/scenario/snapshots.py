"""Snapshots of the reconstruction over the iterations, for the run report.

The evaluation-side observer hands the recorder the current best reconstruction (decoded:
images in [0, 1]) at every logged iteration; the recorder keeps a CPU copy of the first
observation at or after each requested iteration, and always the final state. `save` lets
the modality render each snapshot (images: one PNG strip under `snapshots/`) and writes an
index `snapshots.json` in the run directory.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from gradleak.core.errors import GradleakError
from gradleak.core.files import write_atomically
from gradleak.modalities import Modality

INDEX_FILE = "snapshots.json"

_NICE_MANTISSAS = (1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.5)
_MAX_RATIO = math.sqrt(10.0)  # 1-3-10-30-… spacing at most


def _nice(value: float) -> int:
    """The round number nearest `value` in log distance: {1, 1.5, 2, 2.5, 3, 4, 5, 6, 7.5}·10^k,
    rounded to an integer, at least 1."""
    if value <= 1:
        return 1
    exponent = math.floor(math.log10(value))
    candidates = [round(m * 10**e) for e in (exponent, exponent + 1) for m in _NICE_MANTISSAS]
    return min(candidates, key=lambda c: abs(math.log(c / value)))


def default_snapshot_iterations(total_iterations: int, count: int = 6) -> list[int]:
    """0 plus up to `count - 1` roughly log-spaced, rounded iterations ending at the total.

    Consecutive points are at most √10 apart (0, 3, 10, 30, 100, 300 for 300 iterations),
    closer when the run is short (0, 1, 2, 5, 10, 20 for 20), so the early noise does not
    take up all the snapshots. The result is unique and sorted.
    """
    if isinstance(total_iterations, bool) or not isinstance(total_iterations, int):
        raise GradleakError(f"total_iterations must be an integer, got {total_iterations!r}")
    if total_iterations < 0:
        raise GradleakError(f"total_iterations must be at least 0, got {total_iterations}")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise GradleakError(f"snapshot count must be a positive integer, got {count!r}")
    points = {0}
    if count >= 2 and total_iterations >= 1:
        points.add(total_iterations)
        steps = count - 2  # points strictly between 0 and the total
        if steps > 0 and total_iterations > 1:
            ratio = min(_MAX_RATIO, total_iterations ** (1.0 / steps))
            for k in range(1, steps + 1):
                candidate = _nice(total_iterations / ratio**k)
                if candidate < total_iterations:
                    points.add(candidate)
    return sorted(points)


class SnapshotRecorder:
    """Keep the reconstruction at (the first logged iteration at or after) chosen iterations.

    Observations arrive only at logged iterations, so a request for iteration 100 may be
    filled at 104; the actual iteration is what is recorded. Several requests filled by the
    same observation give one snapshot.
    """

    def __init__(self, iterations: Sequence[int]) -> None:
        requested = []
        for value in iterations:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise GradleakError(
                    f"snapshot iterations must be non-negative integers, got {value!r}"
                )
            requested.append(value)
        self.requested: list[int] = sorted(set(requested))
        self._pending: list[int] = list(self.requested)
        self._snapshots: dict[int, Tensor] = {}
        self._final: int | None = None

    @property
    def snapshots(self) -> dict[int, Tensor]:
        """Recorded iteration -> B×C×H×W CPU tensor, in iteration order."""
        return dict(sorted(self._snapshots.items()))

    @property
    def final_iteration(self) -> int | None:
        return self._final

    def wants(self, iteration: int) -> bool:
        """Whether observe(iteration, …) would record anything (to skip preparing pixels)."""
        return bool(self._pending) and self._pending[0] <= iteration

    def observe(self, iteration: int, pixels: Tensor) -> None:
        """Record `pixels` if `iteration` fills at least one outstanding request."""
        if not self.wants(iteration):
            return
        self._snapshots[iteration] = _cpu_copy(pixels)
        self._pending = [n for n in self._pending if n > iteration]

    def observe_final(self, iteration: int, pixels: Tensor) -> None:
        """Record the final state (replacing an earlier snapshot at the same iteration)."""
        self._snapshots[iteration] = _cpu_copy(pixels)
        self._final = iteration
        self._pending = []

    def save(self, run_dir: Path, modality: Modality) -> list[dict[str, object]]:
        """Render every snapshot as `modality` does and write snapshots.json; return the index.

        Args:
            run_dir: the run directory.
            modality: renders one snapshot (images: snapshots/iter_NNNNNN.png strips).

        Returns:
            One entry per snapshot: its iteration and its file relative to `run_dir`.
        """
        run_dir = Path(run_dir)
        index: list[dict[str, object]] = []
        for iteration, decoded in self.snapshots.items():
            file = modality.snapshot_file(iteration)
            modality.render_snapshot(decoded, run_dir / file)
            index.append({"iteration": iteration, "file": file})
        write_atomically(run_dir / INDEX_FILE, json.dumps(index, indent=2) + "\n")
        return index


def _cpu_copy(pixels: Tensor) -> Tensor:
    """A CPU copy of a decoded batch: images B×C×H×W in float32; text B×L token ids (or
    B×L×H embeddings under optimisation) in their own dtype."""
    if not isinstance(pixels, Tensor) or pixels.ndim < 2 or pixels.shape[0] == 0:
        shape = tuple(pixels.shape) if isinstance(pixels, Tensor) else type(pixels).__name__
        raise GradleakError(
            f"snapshots need a non-empty batch (images B×C×H×W, text B×L), got {shape}"
        )
    dtype = torch.float32 if pixels.is_floating_point() else pixels.dtype
    return pixels.detach().to("cpu", dtype, copy=True)
