"""Files gradleak writes: output folders checked before any work, a run directory that never
mixes two runs, and files replaced whole, so an interrupted write never leaves half a file
where a result is expected.

Every result file goes through `replaced_atomically` (or `write_atomically`,
`write_bytes_atomically`): it is written beside its place under a hidden partial name and
renamed over it in one step. A run directory goes through `output_dir`: a new folder is
written in place and removed again if the run fails before it is complete; a folder that
already holds an earlier run is replaced only on request (`--overwrite`), by writing the new
run into a hidden folder beside it and swapping it in whole when the run ends, so a failure
leaves the earlier run as it was.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from gradleak.core.errors import GradleakError

PARTIAL_SUFFIX = ".partial"
# How many of the names already in a folder a refusal lists.
_LISTED = 3


def holds_files(folder: Path) -> bool:
    """Whether `folder` is a directory with anything in it."""
    folder = Path(folder)
    return folder.is_dir() and any(folder.iterdir())


def check_out_dir(
    out_dir: Path,
    *,
    overwrite: bool = False,
    resumes: str | None = None,
    what: str = "run directory",
) -> Path:
    """Refuse an unusable output folder before the work starts, so a bad --out costs nothing.

    Args:
        out_dir: the folder a run or a study will write (it may not exist yet).
        overwrite: an earlier run in `out_dir` may be replaced (`output_dir` swaps the new
            one in whole when it ends).
        resumes: for a study that resumes into its folder, the file that marks such a
            folder (e.g. ``compare.json``): a folder holding it is accepted as it is.
        what: what the folder is, for the messages.

    Returns:
        `out_dir`, unchanged.

    Raises:
        GradleakError: `out_dir` is a file, cannot be created or written, or already holds
            files (of another kind of study, with `resumes`) and `overwrite` is not given.
    """
    out_dir = check_writable(out_dir, what=what)
    if not holds_files(out_dir) or (resumes is not None and (out_dir / resumes).is_file()):
        return out_dir
    if not overwrite:
        held = "files" if resumes is None else f"files but no {resumes} (not a folder to resume)"
        raise GradleakError(
            f"the {what} {out_dir} already holds {held}: {_listing(out_dir)}; add --overwrite "
            "to replace it, or choose another --out"
        )
    # The new run is swapped in by renaming beside the old one.
    if not _writable(out_dir.parent):
        raise GradleakError(
            f"cannot replace the {what} {out_dir}: its folder {out_dir.parent} is not "
            "writable; choose another --out"
        )
    return out_dir


def check_writable(
    folder: Path, *, what: str = "run directory", fix: str = "choose another --out"
) -> Path:
    """Refuse a folder that cannot be created or written, whatever it holds.

    Args:
        folder: the folder to write in (it may not exist yet).
        what: what the folder is, for the messages.
        fix: what the user can do instead, for the messages.

    Returns:
        `folder`, as a Path.

    Raises:
        GradleakError: `folder` is a file, or it (or the nearest existing folder above it,
            where it would be created) cannot be written.
    """
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing == folder and not folder.is_dir():
        raise GradleakError(f"--out {folder} is a file, not a directory; {fix}")
    if not existing.is_dir() or not _writable(existing):
        if existing == folder:
            raise GradleakError(f"cannot write the {what} {folder}: it is not writable; {fix}")
        reason = "a file" if not existing.is_dir() else "not writable"
        raise GradleakError(f"cannot create the {what} {folder} under {existing} ({reason}); {fix}")
    return folder


def check_out_file(
    out: Path,
    what: str,
    suffixes: Sequence[str] = (".pt", ".pth"),
    *,
    existing: Sequence[Path] = (),
    overwrite: bool = False,
) -> Path:
    """Refuse an --out that cannot take a trained file: its suffix, a folder, an unwritable
    folder, or files of an earlier result without `overwrite`.

    Args:
        out: the file a trainer writes.
        what: what it is, for the messages ("checkpoint", "prior", "inverter").
        suffixes: the endings allowed.
        existing: files the result would replace (refused unless `overwrite`).
        overwrite: replace them.

    Returns:
        `out`.

    Raises:
        GradleakError: one line naming the problem and the fix.
    """
    out = Path(out)
    article = "an" if what[:1] in "aeiou" else "a"
    if out.suffix not in suffixes:
        endings = " or ".join(suffixes)
        raise GradleakError(
            f"--out {out} must name {article} {what} file ending in {endings}, e.g. "
            f"{out.with_suffix(suffixes[0])}"
        )
    if out.is_dir():
        raise GradleakError(f"--out {out} is a folder; name the {what} file inside it")
    found = [p for p in existing if Path(p).exists()]
    if found and not overwrite:
        names = ", ".join(str(p) for p in found)
        raise GradleakError(
            f"--out {out}: {names} already exists; add --overwrite to replace it, or choose "
            "another --out"
        )
    check_writable(out.parent, what=f"{what} folder")
    return out


def _writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK | os.X_OK)


def _listing(folder: Path) -> str:
    names = sorted(p.name for p in folder.iterdir())
    shown = ", ".join(names[:_LISTED])
    return shown + (f" and {len(names) - _LISTED} more" if len(names) > _LISTED else "")


def staging_path(path: Path) -> Path:
    """A fresh hidden name beside `path` to write its replacement under."""
    path = Path(path)
    return path.with_name(f".{path.name}{PARTIAL_SUFFIX}-{uuid.uuid4().hex[:8]}")


@contextmanager
def output_dir(
    out_dir: Path, *, overwrite: bool = False, resumable: bool = False
) -> Iterator[Path]:
    """The folder to write a run or a study into, so two runs never mix in one folder.

    - `out_dir` absent or empty: it is written in place. If the block fails (an error, or
      an interrupt that reaches it), what it wrote is removed again, unless `resumable`
      (a study keeps its finished parts).
    - `out_dir` holding files, with `overwrite`: the block writes into a fresh hidden
      folder beside it, which replaces `out_dir` whole when the block ends; if the block
      fails, that folder is removed and `out_dir` keeps the earlier run.
    - `out_dir` holding files, `resumable` and no `overwrite`: written in place (a study
      resuming its own folder; `check_out_dir(resumes=...)` checked that it is one).

    Args:
        out_dir: the run directory.
        overwrite: replace an earlier run in `out_dir`.
        resumable: the block resumes what an earlier call left in `out_dir` and keeps its
            own work when it fails.

    Yields:
        The folder to write into.

    Raises:
        GradleakError: `out_dir` holds files and neither `overwrite` nor `resumable` is
            given, or an earlier run cannot be replaced.
    """
    out_dir = Path(out_dir)
    if holds_files(out_dir) and overwrite:
        with _replacing_dir(out_dir) as staged:
            yield staged
        return
    if holds_files(out_dir) and not resumable:
        raise GradleakError(
            f"the run directory {out_dir} already holds files: {_listing(out_dir)}; add "
            "--overwrite to replace it, or choose another --out"
        )
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        yield out_dir
    except BaseException:
        if not resumable:
            # Nothing of a run that did not end is left to look like a result. Errors here
            # would hide the one that ended the run.
            if created:
                shutil.rmtree(out_dir, ignore_errors=True)
            else:
                _empty(out_dir)
        raise


def _empty(folder: Path) -> None:
    for child in folder.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


@contextmanager
def _replacing_dir(out_dir: Path) -> Iterator[Path]:
    staged = staging_path(out_dir)
    staged.mkdir(parents=True)
    try:
        yield staged
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)  # the earlier run stays as it was
        raise
    replaced = out_dir.with_name(f".{out_dir.name}.replaced-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(out_dir, replaced)
    except FileNotFoundError:  # removed meanwhile: nothing to replace
        replaced = None
    os.rename(staged, out_dir)
    if replaced is not None:
        _remove_replaced(replaced, out_dir)


def _remove_replaced(replaced: Path, out_dir: Path) -> None:
    try:
        shutil.rmtree(replaced)
    except OSError as exc:
        raise GradleakError(
            f"{out_dir} holds the new run, but the earlier one moved to {replaced} could not "
            f"be removed ({exc.strerror or exc}); delete it by hand"
        ) from exc


@contextmanager
def replaced_files(folder: Path, name: str, replacing: Sequence[Path]) -> Iterator[Path]:
    """Write a new set of files for `folder` whole, replacing an earlier set.

    The block writes into a fresh hidden folder inside `folder`. When it ends, its files
    move into `folder` (each replacing its namesake in one step) and the files of
    `replacing` that the new set does not have are removed. If the block fails, the hidden
    folder is removed and `folder` keeps the earlier set.

    Args:
        folder: where the files go.
        name: the set's name, for the hidden folder's name.
        replacing: the earlier set's files.

    Yields:
        The folder to write the new files into (flat: no subfolders).
    """
    folder = Path(folder)
    staged = staging_path(folder / name)
    staged.mkdir(parents=True)
    try:
        yield staged
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)  # the earlier set stays as it was
        raise
    written = {child.name for child in staged.iterdir()}
    for child_name in sorted(written):
        os.replace(staged / child_name, folder / child_name)
    for old in replacing:
        if old.name not in written:
            Path(old).unlink(missing_ok=True)
    staged.rmdir()


@contextmanager
def replaced_atomically(path: Path) -> Iterator[Path]:
    """Yield a hidden partial path beside `path`; once the block has written it, it replaces
    `path` in one step. If the block fails or is interrupted, the partial file is removed and
    `path` keeps its old content.

    Args:
        path: the file to (re)write; its folder is created if missing.

    Yields:
        The partial path to write (its suffix is not `path`'s: name a file format
        explicitly where a writer guesses it from the suffix).
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


def write_bytes_atomically(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that a reader sees the old file or the whole new one.

    Args:
        path: the file to write; its folder is created if missing.
        data: the whole content.
    """
    with replaced_atomically(path) as partial:
        partial.write_bytes(data)
