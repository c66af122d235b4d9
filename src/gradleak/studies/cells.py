"""Resumable cells: how a study writes, recognises and reuses its finished runs.

A study (a sweep, an attack comparison) is a list of cells, each an ordinary run directory
under the study's folder. A cell is written under `<name>.partial` beside its final place
and renamed to `<name>` only after its outputs and its marker (a JSON file holding the
cell's description) are written, so a crash or Ctrl-C never leaves a directory that looks
finished. On a later call a cell is finished when its marker and `metrics.json` are there
and the marker equals the description the cell has now: a changed setting changes the
description, and the cell runs again. What an earlier call left half-written is removed
before anything runs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from gradleak.core.errors import GradleakError
from gradleak.core.settings import to_plain

METRICS = "metrics.json"  # what every run directory holds once its run has ended
PARTIAL = ".partial"
# `<name>.partial`, and the `<name>.partial-<id>` directories of earlier versions.
_LEFTOVER = re.compile(r".+\.partial(-.*)?")

T = TypeVar("T")
R = TypeVar("R")


def described_config(config: object) -> dict[str, Any]:
    """A run configuration as plain data, less what does not change its result.

    Args:
        config: a run configuration (a dataclass such as RunConfig).

    Returns:
        Its fields as JSON-able values, without `out` (where the run is written) and
        `progress` (whether a bar is shown).
    """
    plain = to_plain(config)
    plain.pop("out", None)
    plain.pop("progress", None)
    return plain


@dataclass(frozen=True)
class CellRef:
    """One cell of a study: where its run directory is and what it was asked for.

    `path` is relative to the study's folder; `description` is JSON-able, and a finished
    cell is reused only while its marker still equals it.
    """

    path: Path
    description: dict[str, Any]


@dataclass(frozen=True)
class CellStore:
    """The finished and half-written cells under one study folder.

    Attributes:
        folder: the study's output folder; cell paths are relative to it.
        marker: the name of the file, in a cell's directory, that holds its description.
        layout: a glob, relative to `folder`, that matches every cell directory (and so the
            partial directories beside them), e.g. ``cells/*``.
        remove_unmarked: whether a directory of the layout without its marker counts as
            half-written too (a cell written in place by an earlier version).
        keep_unpublished: whether a cell that did not finish keeps its partial directory,
            with what its run wrote so far, until the next call removes it.
        unique_partials: whether each try writes to a partial directory of its own
            (`NAME.partial-<8 hex>`), so that workers running the same cell at once (a
            retried task, two sweeps sharing a folder) never write into each other's.
    """

    folder: Path
    marker: str
    layout: str
    remove_unmarked: bool = False
    keep_unpublished: bool = False
    unique_partials: bool = False

    def finished(self, cell: CellRef) -> bool:
        """Whether `cell` has a published run made for its present description."""
        run_dir = self.folder / cell.path
        if not self._complete(run_dir):
            return False
        try:
            marker = json.loads((run_dir / self.marker).read_text(encoding="utf-8"))
        except (OSError, ValueError):  # a damaged marker: the cell is not finished, runs again
            return False
        return marker == cell.description

    def metrics(self, cell: CellRef) -> dict[str, Any]:
        """The `metrics.json` of a finished cell."""
        return json.loads((self.folder / cell.path / METRICS).read_text(encoding="utf-8"))

    def collect(self, cells: Iterable[tuple[T, CellRef]]) -> list[tuple[T, dict[str, Any]]]:
        """(cell, metrics) of every finished cell, in the order given.

        Args:
            cells: each study cell beside its reference.

        Returns:
            The finished ones only, each with the metrics its run wrote.
        """
        return [(item, self.metrics(ref)) for item, ref in cells if self.finished(ref)]

    def remove_leftovers(self) -> int:
        """Delete what an earlier call left half-written; returns how many directories.

        Raises:
            GradleakError: if one cannot be deleted.
        """
        leftovers = [path for path in self.folder.glob(self.layout) if self._leftover(path)]
        for path in leftovers:
            try:
                shutil.rmtree(path)
            except OSError as exc:
                raise GradleakError(
                    f"cannot remove the half-written run {path}: {exc.strerror or exc}; "
                    "delete it by hand and run again"
                ) from exc
        return len(leftovers)

    def publish(self, cell: CellRef, write: Callable[[Path], R | None]) -> R | None:
        """Run `write` into a fresh partial directory and publish it as the cell's run.

        Args:
            cell: the cell to write.
            write: writes the run into the directory it is given; returns None when the run
                was interrupted (Ctrl-C reached it), which is then not published.

        Returns:
            What `write` returned; None if the run was interrupted.
        """
        final = self.folder / cell.path
        suffix = f"-{uuid.uuid4().hex[:8]}" if self.unique_partials else ""
        partial = final.with_name(final.name + PARTIAL + suffix)
        if partial.exists():  # an earlier try at this cell that was kept for inspection
            shutil.rmtree(partial)
        published = False
        try:
            outcome = write(partial)
            if outcome is None:
                return None
            marker = json.dumps(cell.description, indent=2) + "\n"
            (partial / self.marker).write_text(marker, encoding="utf-8")
            if final.exists():  # made for another description: this run replaces it
                shutil.rmtree(final)
            os.replace(partial, final)
            published = True
            return outcome
        finally:
            if not published and not self.keep_unpublished and partial.exists():
                # Errors here would hide the one that ended the run; the next call's
                # remove_leftovers deletes whatever stays.
                shutil.rmtree(partial, ignore_errors=True)

    def _complete(self, run_dir: Path) -> bool:
        return (run_dir / self.marker).is_file() and (run_dir / METRICS).is_file()

    def _leftover(self, path: Path) -> bool:
        if not path.is_dir():
            return False
        if _LEFTOVER.fullmatch(path.name):
            return True
        return self.remove_unmarked and not self._complete(path)
