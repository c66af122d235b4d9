"""Resumable cells: failed cells are recorded, damaged ones are not finished, and partial
directories name the process that writes them."""

from __future__ import annotations

import json
import os
from pathlib import Path

from gradleak.studies.cells import FAILURE, CellRecord, CellRef, CellStore
from gradleak.studies.lock import this_host

CELL = CellRef(Path("cells") / "a", {"cell": "a", "config": {"lr": 0.1}})


def _store(folder: Path, **policy: object) -> CellStore:
    return CellStore(folder, "cell.json", layout="cells/*", **policy)  # type: ignore[arg-type]


def _writes(metrics: object):  # type: ignore[no-untyped-def]  # noqa: ANN202
    def write(out: Path) -> str:
        out.mkdir(parents=True)
        (out / "metrics.json").write_text(json.dumps(metrics))
        return "finished"

    return write


def test_a_failed_cell_is_recorded_kept_as_no_leftover_and_replaced_by_a_run(
    tmp_path: Path,
) -> None:
    store = _store(tmp_path, remove_unmarked=True, unique_partials=True)
    store.record_failure(CELL, {"reason": "no data", "error": "GradleakError"})
    assert not store.finished(CELL)
    assert store.records([("a", CELL)]) == [
        ("a", CellRecord(failure={"reason": "no data", "error": "GradleakError"}))
    ]
    assert store.collect([("a", CELL)]) == []
    assert store.remove_leftovers() == 0  # a failed cell is a published record, not a leftover
    changed = CellRef(CELL.path, {"cell": "a", "config": {"lr": 0.2}})
    assert store.records([("a", changed)]) == []  # recorded for another description

    assert store.publish(CELL, _writes({"psnr": 12.5})) == "finished"
    assert store.records([("a", CELL)]) == [("a", CellRecord(metrics={"psnr": 12.5}))]
    assert not (tmp_path / CELL.path / FAILURE).exists()


def test_metrics_the_store_does_not_accept_leave_the_cell_unfinished(tmp_path: Path) -> None:
    store = _store(tmp_path, accepts=lambda metrics: "psnr" in metrics)
    store.publish(CELL, _writes({"ssim": 0.5}))
    assert not store.finished(CELL) and store.records([("a", CELL)]) == []
    for damaged in ("[1, 2]", '{"psnr": 1', ""):
        (tmp_path / CELL.path / "metrics.json").write_text(damaged)
        assert not _store(tmp_path).finished(CELL)  # not a JSON mapping: damaged for any store


def test_a_partial_directory_names_the_process_writing_it(tmp_path: Path) -> None:
    store = _store(tmp_path, unique_partials=True)
    seen: list[str] = []

    def write(out: Path) -> str:
        seen.append(out.name)
        out.mkdir(parents=True)
        assert store.remove_leftovers() == 0  # this process still runs: not a leftover
        assert out.is_dir()
        (out / "metrics.json").write_text("{}")
        return "finished"

    (tmp_path / "cells").mkdir()
    store.publish(CELL, write)
    (name,) = seen
    assert name.startswith("a.partial-") and name.endswith(f"-{os.getpid()}@{this_host()}")
