"""One sweep at a time writes a folder: a live lock refuses, a stale one is taken over, and
no sweep removes the cells another process is still writing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gradleak.core.errors import GradleakError
from gradleak.studies.lock import FolderLock, Owner, this_host
from gradleak.studies.sweep.runner import CELLS, LOCK, cell_store, run_sweep
from gradleak.studies.sweep.spec import SweepSpec, parse_spec

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def spec() -> SweepSpec:
    return parse_spec({"attacks": ["idlg"], "options": {"idlg": {"iterations": 2}}})


def _dead_pid() -> int:
    """The id of a process that has ended (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _hold(folder: Path, pid: int, host: str | None = None) -> Owner:
    owner = Owner(pid, host or this_host(), "2025-01-01T00:00:00+00:00")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / LOCK).write_text(json.dumps(owner.__dict__))
    return owner


def test_a_folder_a_live_sweep_holds_is_refused_naming_its_process(
    spec: SweepSpec, tmp_path: Path
) -> None:
    out = tmp_path / "sweep"
    _hold(out, os.getppid())  # the test's parent runs: a live holder on this host
    partial = out / CELLS / "idlg__x.partial-0123abcd-1@elsewhere"
    partial.mkdir(parents=True)
    with pytest.raises(GradleakError) as error:
        run_sweep(spec, out, progress=False, threads=1)
    message = str(error.value)
    assert "\n" not in message
    assert f"in use by another sweep, pid {os.getppid()}" in message
    assert "choose another --out" in message and str(out / LOCK) in message
    assert partial.is_dir()  # nothing of the folder was touched
    assert not (out / "spec.yaml").exists()
    assert json.loads((out / LOCK).read_text())["pid"] == os.getppid()


def test_a_lock_from_another_host_is_refused_with_the_file_to_delete(
    spec: SweepSpec, tmp_path: Path
) -> None:
    _hold(tmp_path, 1234, host="node-elsewhere")
    with pytest.raises(GradleakError, match=r"in use by a sweep on node-elsewhere \(pid 1234"):
        run_sweep(spec, tmp_path, progress=False, threads=1)


def test_a_stale_lock_is_taken_over_with_a_notice_and_released_at_the_end(
    spec: SweepSpec, tmp_path: Path
) -> None:
    dead = _dead_pid()
    _hold(tmp_path, dead)
    notices: list[str] = []
    result = run_sweep(spec, tmp_path, progress=False, threads=1, notice=notices.append)
    assert result.ran == 1
    assert len(notices) == 1 and f"from pid {dead} on {this_host()}" in notices[0]
    assert "no longer runs" in notices[0]
    assert (tmp_path / LOCK).read_text() == ""  # released: the next sweep takes it quietly
    again = run_sweep(spec, tmp_path, progress=False, threads=1, notice=notices.append)
    assert again.skipped == 1 and len(notices) == 1


def test_an_unreadable_lock_is_replaced_with_a_notice(spec: SweepSpec, tmp_path: Path) -> None:
    (tmp_path / LOCK).write_text('{"pid": ')
    notices: list[str] = []
    run_sweep(spec, tmp_path, progress=False, threads=1, notice=notices.append)
    assert notices == [f"replaced the unreadable lock file {tmp_path / LOCK}"]


def test_the_lock_is_released_when_a_sweep_is_interrupted_or_fails(
    spec: SweepSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gradleak.studies.sweep.runner as runner

    def interrupted(job):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run_cell", interrupted)
    assert run_sweep(spec, tmp_path, progress=False, threads=1).interrupted
    assert (tmp_path / LOCK).read_text() == ""

    def broken(job):  # type: ignore[no-untyped-def]
        raise GradleakError("cannot remove the half-written run")

    monkeypatch.setattr(runner, "run_cell", broken)
    with pytest.raises(GradleakError):
        run_sweep(spec, tmp_path, progress=False, threads=1)
    assert (tmp_path / LOCK).read_text() == ""


def test_two_locks_on_one_folder_exclude_each_other(tmp_path: Path) -> None:
    notices: list[str] = []
    second = FolderLock(tmp_path, LOCK, "sweep", notices.append)
    with (
        FolderLock(tmp_path, LOCK, "sweep", notices.append),
        pytest.raises(GradleakError, match=f"pid {os.getpid()}"),
    ):
        second.acquire()
    with FolderLock(tmp_path, LOCK, "sweep", notices.append):
        pass
    assert notices == []


def test_a_sweep_in_another_process_holds_the_folder(spec: SweepSpec, tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from gradleak.studies.lock import FolderLock\n"
            f"with FolderLock({str(tmp_path)!r}, {LOCK!r}, 'sweep', print):\n"
            "    print('held', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(GradleakError, match=f"pid {holder.pid} "):
            run_sweep(spec, tmp_path, progress=False, threads=1)
    finally:
        holder.communicate("", timeout=60)
    assert (tmp_path / LOCK).read_text() == ""
    assert run_sweep(spec, tmp_path, progress=False, threads=1).ran == 1


def test_partial_cells_of_live_processes_are_kept_and_of_ended_ones_removed(
    tmp_path: Path,
) -> None:
    cells = tmp_path / CELLS
    live = cells / f"a.partial-0123abcd-{os.getppid()}@{this_host()}"
    ended = cells / f"b.partial-0123abcd-{_dead_pid()}@{this_host()}"
    elsewhere = cells / f"c.partial-0123abcd-{os.getppid()}@node-elsewhere"
    older = cells / "d.partial-0123abcd"
    for path in (live, ended, elsewhere, older):
        path.mkdir(parents=True)
    assert cell_store(tmp_path).remove_leftovers() == 3
    assert [path.name for path in cells.iterdir()] == [live.name]


def test_a_lock_left_by_an_earlier_process_with_this_pid_is_stale(
    spec: SweepSpec, tmp_path: Path
) -> None:
    # A restarted container's entry point gets the same pid (often 1) and host as the sweep
    # that was killed: its lock names this process, but no lock of this process holds it.
    _hold(tmp_path, os.getpid())
    notices: list[str] = []
    result = run_sweep(spec, tmp_path, progress=False, threads=1, notice=notices.append)
    assert result.ran == 1
    assert len(notices) == 1 and "no longer runs" in notices[0]


def test_partial_cells_named_with_this_pid_are_kept_only_while_this_process_writes_them(
    tmp_path: Path,
) -> None:
    cells = tmp_path / CELLS
    earlier = cells / f"a.partial-0123abcd-{os.getpid()}@{this_host()}"
    earlier.mkdir(parents=True)
    store = cell_store(tmp_path)
    assert store.remove_leftovers() == 1  # left by an earlier process with this pid
    assert not earlier.exists()


def test_the_partial_cell_this_process_is_writing_is_kept(tmp_path: Path) -> None:
    from gradleak.studies.cells import CellRef

    store = cell_store(tmp_path)
    seen: list[bool] = []

    def write(partial: Path) -> str:
        partial.mkdir(parents=True)
        store.remove_leftovers()  # e.g. another study starting on this folder
        seen.append(partial.exists())
        (partial / "metrics.json").write_text("{}")
        return "written"

    assert store.publish(CellRef(Path(CELLS) / "a", {"cell": "a"}), write) == "written"
    assert seen == [True]
