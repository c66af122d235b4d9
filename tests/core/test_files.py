"""Files gradleak writes: output folders checked first, files replaced whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from gradleak.core.errors import GradleakError
from gradleak.core.files import check_out_dir, replaced_atomically, write_atomically


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
