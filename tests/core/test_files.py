"""Files gradleak writes: output folders checked first, files replaced whole."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gradleak.core.errors import GradleakError
from gradleak.core.files import (
    check_out_dir,
    output_dir,
    replaced_atomically,
    replaced_files,
    write_atomically,
    write_bytes_atomically,
)


def _children(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_write_atomically_replaces_the_whole_file_and_leaves_no_partial(tmp_path: Path) -> None:
    path = tmp_path / "cache" / "none.json"
    write_atomically(path, '{"a": 1}')
    write_atomically(path, '{"b": 2}')
    assert path.read_text() == '{"b": 2}'
    assert _children(path.parent) == ["none.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_partial(tmp_path: Path) -> None:
    path = tmp_path / "state.pt"
    write_atomically(path, "old")
    with pytest.raises(KeyboardInterrupt), replaced_atomically(path) as partial:
        partial.write_text("half")
        raise KeyboardInterrupt
    assert path.read_text() == "old"
    assert _children(tmp_path) == ["state.pt"]


def test_out_dir_may_be_new_but_not_a_file(tmp_path: Path) -> None:
    assert check_out_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    (tmp_path / "file").write_text("x")
    with pytest.raises(GradleakError, match="is a file, not a directory"):
        check_out_dir(tmp_path / "file")
    with pytest.raises(GradleakError, match="cannot create the run directory"):
        check_out_dir(tmp_path / "file" / "below")


def _run(folder: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (folder / name).write_text(text)


def test_a_folder_holding_files_is_refused_naming_it_and_both_fixes(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    assert check_out_dir(run) == run  # empty: nothing to mix with
    _run(run, {"metrics.json": "{}", "grid.png": ""})
    with pytest.raises(GradleakError) as info:
        check_out_dir(run)
    message = str(info.value)
    assert str(run) in message and "metrics.json" in message
    assert "add --overwrite" in message and "choose another --out" in message
    assert "\n" not in message
    assert check_out_dir(run, overwrite=True) == run


def test_a_study_resumes_only_a_folder_of_its_own(tmp_path: Path) -> None:
    study = tmp_path / "study"
    study.mkdir()
    _run(study, {"compare.json": "{}", "results.csv": ""})
    assert check_out_dir(study, resumes="compare.json") == study
    other = tmp_path / "other"
    other.mkdir()
    _run(other, {"metrics.json": "{}"})
    with pytest.raises(GradleakError, match="no compare.json .*add --overwrite"):
        check_out_dir(other, resumes="compare.json")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_refused(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(GradleakError, match=r"cannot create the run directory .*not writable"):
            check_out_dir(locked / "run")
        with pytest.raises(GradleakError, match="it is not writable"):
            check_out_dir(locked)
    finally:
        locked.chmod(0o700)


def test_a_new_run_is_written_in_place(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "a"
    with output_dir(run) as folder:
        assert folder == run
        _run(folder, {"metrics.json": "{}"})
    assert _children(run) == ["metrics.json"]


@pytest.mark.parametrize("failure", [OSError, KeyboardInterrupt])
def test_a_new_run_that_fails_leaves_no_half_run(tmp_path: Path, failure: type) -> None:
    run = tmp_path / "new"
    with pytest.raises(failure), output_dir(run) as folder:
        _run(folder, {"grid.png": ""})
        raise failure
    assert not run.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(failure), output_dir(empty) as folder:
        _run(folder, {"grid.png": ""})
        raise failure
    assert _children(empty) == []


def test_overwrite_replaces_the_earlier_run_whole(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    _run(run, {"metrics.json": "old", "snapshot-300.png": "old"})
    with output_dir(run, overwrite=True) as folder:
        assert folder != run and folder.parent == run.parent
        assert (run / "metrics.json").read_text() == "old"  # intact while the run writes
        _run(folder, {"metrics.json": "new"})
    # Nothing of the earlier run is mixed into the new one, and nothing is left beside it.
    assert _children(run) == ["metrics.json"]
    assert (run / "metrics.json").read_text() == "new"
    assert _children(tmp_path) == ["run"]


@pytest.mark.parametrize("failure", [OSError, KeyboardInterrupt])
def test_an_overwrite_that_fails_keeps_the_earlier_run(tmp_path: Path, failure: type) -> None:
    run = tmp_path / "run"
    run.mkdir()
    _run(run, {"metrics.json": "old"})
    with pytest.raises(failure), output_dir(run, overwrite=True) as folder:
        _run(folder, {"metrics.json": "half"})
        raise failure
    assert _children(run) == ["metrics.json"]
    assert (run / "metrics.json").read_text() == "old"
    assert _children(tmp_path) == ["run"]


def test_a_run_is_never_written_over_an_earlier_one_without_overwrite(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    _run(run, {"metrics.json": "old"})
    with pytest.raises(GradleakError, match="add --overwrite"), output_dir(run):
        pytest.fail("the block must not run")
    assert (run / "metrics.json").read_text() == "old"


def test_a_resumed_study_keeps_its_work_when_it_fails(tmp_path: Path) -> None:
    study = tmp_path / "study"
    study.mkdir()
    _run(study, {"compare.json": "{}"})
    with pytest.raises(KeyboardInterrupt), output_dir(study, resumable=True) as folder:
        assert folder == study
        _run(folder, {"finished-run": "kept"})
        raise KeyboardInterrupt
    assert _children(study) == ["compare.json", "finished-run"]


def test_a_file_set_is_replaced_whole(tmp_path: Path) -> None:
    old = {"m.pt": "old", "m.json": "old", "m.epoch3.pt": "old"}
    _run(tmp_path, {**old, "other.pt": "someone else's"})
    earlier = [tmp_path / name for name in old]
    with replaced_files(tmp_path, "m", earlier) as folder:
        assert (tmp_path / "m.pt").read_text() == "old"  # intact while the new set is written
        _run(folder, {"m.pt": "new", "m.json": "new", "m.epoch1.pt": "new"})
    assert _children(tmp_path) == ["m.epoch1.pt", "m.json", "m.pt", "other.pt"]
    assert all((tmp_path / n).read_text() == "new" for n in ("m.pt", "m.json", "m.epoch1.pt"))
    with pytest.raises(OSError), replaced_files(tmp_path, "m", earlier) as folder:
        _run(folder, {"m.pt": "half"})
        raise OSError
    assert (tmp_path / "m.pt").read_text() == "new"
    assert _children(tmp_path) == ["m.epoch1.pt", "m.json", "m.pt", "other.pt"]


def test_write_bytes_atomically(tmp_path: Path) -> None:
    path = tmp_path / "a" / "plot.png"
    write_bytes_atomically(path, b"\x89PNG")
    assert path.read_bytes() == b"\x89PNG"
    assert _children(path.parent) == ["plot.png"]
