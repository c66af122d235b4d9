"""Who is writing a study folder: its lock, and the owner of a half-written cell.

A study that resumes into its folder (a sweep) holds the folder's lock file while it runs:
JSON naming the owner's process id, host and start time. A second study on the same folder
is refused in one line naming that process. A lock whose process is no longer running on
this host is stale: it is taken over, with a notice. A lock from another host cannot be
checked from here, so it is refused with the file to delete if that study has ended.

The lock file stays in the folder, emptied when its owner ends: every reader and writer
holds an advisory `flock` on that one file while it reads or changes it, so two studies
starting at once never both take the folder. Removing the file would let a waiting study
write into a file nobody else reads.
"""

from __future__ import annotations

import datetime
import errno
import json
import os
import socket
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gradleak.core.errors import GradleakError

try:
    import fcntl
except ImportError:  # not on POSIX: the lock's content still guards, without the flock
    fcntl = None  # type: ignore[assignment]

Notice = Callable[[str], None]

# The tokens of the locks this process holds now. A lock naming this process's id and host
# with another token was left by an earlier process that had the same id (a restarted
# container's entry point often does): it is stale, not ours.
_HELD: set[str] = set()


def this_host() -> str:
    """The name of this machine, as locks and cell owners record it."""
    return socket.gethostname()


def process_alive(pid: int) -> bool:
    """Whether a process with id `pid` runs on this machine (any user's)."""
    if pid <= 0:  # 0 and negative ids name process groups, not a process
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by another user
        return True
    return True


@dataclass(frozen=True)
class Owner:
    """A process that writes a study folder: its id, its host and when it started."""

    pid: int
    host: str
    started: str
    token: str = ""  # tells apart two locks one process takes (e.g. from two threads)

    @classmethod
    def current(cls) -> Owner:
        started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        return cls(os.getpid(), this_host(), started, uuid.uuid4().hex)

    def running(self) -> bool | None:
        """Whether it still runs: None on another host, where this cannot be told."""
        if self.host != this_host():
            return None
        if self.pid == os.getpid():
            return self.token in _HELD
        return process_alive(self.pid)

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}, started {self.started}"


def _owner(text: str) -> Owner | None:
    """The owner a lock file names; None when it names none (empty or damaged)."""
    try:
        data: Any = json.loads(text)
        owner = Owner(
            int(data["pid"]), str(data["host"]), str(data["started"]), str(data.get("token", ""))
        )
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    return owner


class FolderLock:
    """The lock of a study folder, held in a `with` block.

    Args:
        folder: the study folder (it must exist).
        name: the lock file's name in it.
        what: what holds the lock, for messages (e.g. "sweep").
        notice: where the one line saying a stale lock was taken over goes.
    """

    def __init__(self, folder: Path, name: str, what: str, notice: Notice) -> None:
        self.path = Path(folder) / name
        self.what = what
        self.notice = notice
        self.owner = Owner.current()

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the folder, or refuse it while another live process holds it.

        Raises:
            GradleakError: another process on this host that still runs holds the lock, or
                a process on another host does; or the lock file cannot be written.
        """
        with self._file() as fd:
            text = _read(fd)
            holder = _owner(text)
            if holder is not None and holder != self.owner:
                running = holder.running()
                if running is not False:
                    self._refuse(holder, running)
                self.notice(
                    f"took over {self.path} from {holder.describe()}, which no longer runs; "
                    "its half-written cells run again"
                )
            elif holder is None and text.strip():
                self.notice(f"replaced the unreadable lock file {self.path}")
            _write(fd, json.dumps(asdict(self.owner)) + "\n")
            _HELD.add(self.owner.token)

    def release(self) -> None:
        """Empty the lock file if this lock still holds it."""
        with self._file() as fd:
            _HELD.discard(self.owner.token)
            if _owner(_read(fd)) == self.owner:
                _write(fd, "")

    def _refuse(self, holder: Owner, running: bool | None) -> None:
        if running is None:
            raise GradleakError(
                f"{self.path.parent} is in use by a {self.what} on {holder.host} (pid "
                f"{holder.pid}, started {holder.started}); wait for it to end or choose "
                f"another --out (if it no longer runs, delete {self.path})"
            )
        raise GradleakError(
            f"{self.path.parent} is in use by another {self.what}, pid {holder.pid} "
            f"(started {holder.started}); wait for it to end or choose another --out (if "
            f"pid {holder.pid} is not a gradleak {self.what}, delete {self.path})"
        )

    @contextmanager
    def _file(self) -> Iterator[int]:
        """The lock file, open and flock'ed: held only while it is read or written."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise GradleakError(
                f"cannot write the lock file {self.path}: {exc.strerror or exc}; choose "
                "another --out"
            ) from exc
        try:
            _flock(fd, self.path)
            yield fd
        finally:
            os.close(fd)  # releases the flock


# What flock raises on a file system that has no locks (some network file systems).
_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)


def _flock(fd: int, path: Path) -> None:
    if fcntl is None:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError as exc:
        if exc.errno not in _NO_LOCKS:
            raise GradleakError(f"cannot lock {path}: {exc.strerror or exc}") from exc
        # Without flock the lock's content still refuses a second study; only two studies
        # starting in the same instant could both take the folder.


def _read(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", errors="replace")


def _write(fd: int, text: str) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, text.encode("utf-8"))
