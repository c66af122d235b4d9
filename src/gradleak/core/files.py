"""Files gradleak writes: an output folder checked before any work, and files replaced
whole, so an interrupted write never leaves half a file where a result is expected."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gradleak.core.errors import GradleakError

PARTIAL_SUFFIX = ".partial"


def check_out_dir(out_dir: Path) -> Path:
    """Refuse an unusable output folder before the work starts, so a bad --out costs nothing.

    Args:
        out_dir: the folder a run or a study will write (it may not exist yet).

    Returns:
        `out_dir`, unchanged.

    Raises:
        GradleakError: `out_dir` is a file, or the nearest existing folder above it cannot be
            written.
    """
    existing = out_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing == out_dir and not out_dir.is_dir():
        raise GradleakError(f"--out {out_dir} is a file, not a directory; choose another --out")
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise GradleakError(f"cannot create the run directory {out_dir} under {existing}")
    return out_dir


@contextmanager
def replaced_atomically(path: Path) -> Iterator[Path]:
    """Yield a hidden partial path beside `path`; once the block has written it, it replaces
    `path` in one step. If the block fails or is interrupted, the partial file is removed and
    `path` keeps its old content.

    Args:
        path: the file to (re)write; its folder is created if missing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}{PARTIAL_SUFFIX}")
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def write_atomically(path: Path, text: str) -> None:
    """Write `text` to `path` so that a reader sees the old file or the whole new one.

    Args:
        path: the file to write; its folder is created if missing.
        text: the whole content (UTF-8).
    """
    with replaced_atomically(path) as partial:
        partial.write_text(text, encoding="utf-8")
