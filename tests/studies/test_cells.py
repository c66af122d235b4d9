"""Resumable cells: publishing, recognising finished runs, leftovers and interruptions."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from gradleak.studies.cells import CellRef, CellStore, described_config

CELL = CellRef(Path("cells") / "a", {"cell": "a", "config": {"lr": 0.1}})


def _store(folder: Path, **policy: bool) -> CellStore:
    return CellStore(folder, "cell.json", layout="cells/*", **policy)


def _writes(psnr: float):  # type: ignore[no-untyped-def]  # noqa: ANN202
    """A run that writes its metrics and says it finished."""

    def write(out: Path) -> str:
        out.mkdir(parents=True)
        (out / "metrics.json").write_text(json.dumps({"psnr": psnr}))
        (out / f"run-{psnr}.txt").write_text("output")
        return "finished"

    return write


def _interrupted(out: Path) -> None:
    """A run that Ctrl-C reached after it had written part of its outputs."""
    out.mkdir(parents=True)
    (out / "history.csv").write_text("iteration,loss\n1,0.5\n")
    return None


def _children(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_published_cell_is_finished_with_its_marker_and_metrics(tmp_path: Path) -> None:
    store = _store(tmp_path)
    assert not store.finished(CELL)
    assert store.publish(CELL, _writes(12.5)) == "finished"
    assert store.finished(CELL)
    assert _children(tmp_path / "cells") == ["a"]  # no partial directory stays
    run_dir = tmp_path / "cells" / "a"
    assert json.loads((run_dir / "cell.json").read_text()) == CELL.description
    assert store.metrics(CELL) == {"psnr": 12.5}
    other = CellRef(Path("cells") / "b", {"cell": "b"})
    assert store.collect([("b", other), ("a", CELL)]) == [("a", {"psnr": 12.5})]


def test_a_changed_description_is_not_finished_and_publishing_replaces_the_run(
    tmp_path: Path,
) -> None:
    store = _store(tmp_path)
    store.publish(CELL, _writes(12.5))
    changed = CellRef(CELL.path, {"cell": "a", "config": {"lr": 0.2}})
    assert not store.finished(changed)
    store.publish(changed, _writes(20.0))
    assert store.finished(changed) and not store.finished(CELL)
    assert _children(tmp_path / "cells" / "a") == ["cell.json", "metrics.json", "run-20.0.txt"]


@pytest.mark.parametrize("damage", ["marker", "metrics", "garbled"])
def test_a_cell_without_its_marker_or_metrics_is_not_finished(tmp_path: Path, damage: str) -> None:
    store = _store(tmp_path)
    store.publish(CELL, _writes(12.5))
    run_dir = tmp_path / CELL.path
    if damage == "garbled":
        (run_dir / "cell.json").write_text('{"cell": "a", "con')
    else:
        (run_dir / ("cell.json" if damage == "marker" else "metrics.json")).unlink()
    assert not store.finished(CELL)
    assert store.collect([("a", CELL)]) == []


def test_leftover_partials_of_every_scheme_are_removed_and_finished_cells_kept(
    tmp_path: Path,
) -> None:
    store = _store(tmp_path)
    store.publish(CELL, _writes(12.5))
    cells = tmp_path / "cells"
    for name in ("b.partial", "c.partial-1a2b3c4d", "d.partial-dead"):
        (cells / name).mkdir()
        (cells / name / "metrics.json").write_text("{}")
    (cells / "e").mkdir()  # a cell directory without its marker
    (cells / "notes.partial").write_text("a file is not a run directory")

    assert store.remove_leftovers() == 3
    assert _children(cells) == ["a", "e", "notes.partial"]
    assert _store(tmp_path, remove_unmarked=True).remove_leftovers() == 1
    assert _children(cells) == ["a", "notes.partial"]
    assert store.finished(CELL)


def test_leftovers_are_found_at_the_depth_of_the_layout(tmp_path: Path) -> None:
    store = CellStore(tmp_path, "run.json", layout="runs/*/*")
    deep = tmp_path / "runs" / "mnist" / "x.partial"
    shallow = tmp_path / "runs" / "y.partial"
    deep.mkdir(parents=True)
    shallow.mkdir()
    assert store.remove_leftovers() == 1
    assert not deep.exists() and shallow.exists()
    assert CellStore(tmp_path / "absent", "run.json", layout="runs/*/*").remove_leftovers() == 0


def test_an_interrupted_cell_is_not_published_and_leaves_nothing(tmp_path: Path) -> None:
    store = _store(tmp_path)
    (tmp_path / "cells").mkdir()
    assert store.publish(CELL, _interrupted) is None
    assert _children(tmp_path / "cells") == []
    assert not store.finished(CELL)


def test_ctrl_c_or_a_crash_inside_the_run_leaves_nothing_and_propagates(tmp_path: Path) -> None:
    store = _store(tmp_path)
    (tmp_path / "cells").mkdir()

    def crashing(out: Path) -> str:
        _interrupted(out)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.publish(CELL, crashing)
    assert _children(tmp_path / "cells") == []


def test_an_interrupted_run_keeps_its_partial_until_the_next_call_when_asked(
    tmp_path: Path,
) -> None:
    store = _store(tmp_path, keep_unpublished=True)
    store.publish(CELL, _writes(12.5))
    changed = CellRef(CELL.path, {"cell": "a", "config": {"lr": 0.2}})
    assert store.publish(changed, _interrupted) is None
    cells = tmp_path / "cells"
    assert _children(cells) == ["a", "a.partial"]
    assert (cells / "a.partial" / "history.csv").is_file()
    assert store.finished(CELL)  # the run published before is untouched

    # The next try at the cell starts from an empty partial directory.
    assert store.publish(changed, _writes(20.0)) == "finished"
    assert _children(cells) == ["a"]
    assert _children(cells / "a") == ["cell.json", "metrics.json", "run-20.0.txt"]


def test_described_config_leaves_out_where_and_how_a_run_is_shown() -> None:
    @dataclass
    class Config:
        lr: float
        out: Path | None
        progress: bool
        shape: tuple[int, int]

    assert described_config(Config(0.1, Path("x"), True, (2, 3))) == {"lr": 0.1, "shape": [2, 3]}


def test_the_sweep_and_the_comparison_remove_leftovers_of_both_earlier_schemes(
    tmp_path: Path,
) -> None:
    from gradleak.studies.compare import cell_store as compare_store
    from gradleak.studies.sweep.runner import cell_store as sweep_store

    cells = tmp_path / "sweep" / "cells"
    runs = tmp_path / "compare" / "runs" / "cifar10" / "image-0"
    leftovers = [cells / "a.partial", cells / "b.partial-1a2b3c4d"]
    leftovers += [runs / "dlg-fedsgd.partial", runs / "idlg-fedsgd.partial-1a2b3c4d"]
    for path in [*leftovers, runs / "ig-fedsgd"]:
        path.mkdir(parents=True)
    assert sweep_store(tmp_path / "sweep").remove_leftovers() == 2
    assert compare_store(tmp_path / "compare").remove_leftovers() == 2
    assert not any(path.exists() for path in leftovers)
    assert _children(runs) == ["ig-fedsgd"]  # a comparison removes partial directories only
