"""Resumable cells: how a study writes, recognises and reuses its finished runs.

A study (a sweep, an attack comparison) is a list of cells, each an ordinary run directory
under the study's folder. A cell is written under `<name>.partial` beside its final place
and renamed to `<name>` only after its outputs and its marker (a JSON file holding the
cell's description) are written, so a crash or Ctrl-C never leaves a directory that looks
finished. On a later call a cell is finished when its marker and `metrics.json` are there
and the marker equals the description the cell has now: a changed setting changes the
description, and the cell runs again; so does a cell whose `metrics.json` is damaged (not
JSON, not a mapping, or refused by the study's check of it). A cell whose run failed can be
recorded as such: its directory holds the marker and `failure.json` (the one-line reason)
instead of the run's metrics, and it runs again on the next call.

What an earlier call left half-written is removed before anything runs, except the partial
directory of a try whose process still runs on this host (a partial directory's name says
which process writes it), so that no call deletes another's work in progress.
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
from gradleak.core.files import write_atomically
from gradleak.core.settings import to_plain
from gradleak.models.user import factory_source_digest, is_factory_spec
from gradleak.studies.lock import process_alive, this_host

METRICS = "metrics.json"  # what every run directory holds once its run has ended
FAILURE = "failure.json"  # what a cell whose run failed holds instead: why
PARTIAL = ".partial"
# `<name>.partial`, `<name>.partial-<id>` (earlier versions) and `<name>.partial-<id>-<pid>@<host>`.
_LEFTOVER = re.compile(r".+\.partial(-.*)?")
_OWNED = re.compile(r".+\.partial-[0-9a-f]{8}-(?P<pid>\d+)@(?P<host>.+)")
# The partial directories this process is writing now. A partial named with this process's
# id but not listed here was left by an earlier process that had the same id (a restarted
# container's entry point often does), so it is a leftover.
_WRITING: set[str] = set()

T = TypeVar("T")
R = TypeVar("R")


def described_config(config: object) -> dict[str, Any]:
    """A run configuration as plain data, less what does not change its result.

    Args:
        config: a run configuration (a dataclass such as RunConfig).

    Returns:
        Its fields as JSON-able values, without `out` (where the run is written),
        `progress` (whether a bar is shown) and `device` (where tensors compute: a cell
        finished on one device is reused on another); with a factory model, the digest of
        its source (`model_source`).
    """
    plain = to_plain(config)
    for key in ("out", "progress", "device"):
        plain.pop(key, None)
    if plain.get("malicious_server") is False:
        # Absent for an honest server, so cells recorded before the setting keep matching.
        del plain["malicious_server"]
    model = plain.get("model")
    if is_factory_spec(model):
        # The user's model code is part of the cell: an edited file makes its cells run again.
        plain["model_source"] = factory_source_digest(str(model))
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
class CellRecord:
    """What a cell's directory holds for its present description.

    Attributes:
        metrics: the run's metrics, for a finished cell; else None.
        failure: why its run failed (`FAILURE`'s content, with at least `reason`), for a
            cell recorded as failed; else None.
    """

    metrics: dict[str, Any] | None = None
    failure: dict[str, Any] | None = None


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
            (`NAME.partial-<8 hex>-<pid>@<host>`), so that workers running the same cell at
            once (a retried task) never write into each other's, and a partial directory
            whose process still runs is never taken for a leftover.
        accepts: whether a run's metrics are whole: a finished cell whose metrics it refuses
            is damaged and runs again (default: any JSON mapping).
    """

    folder: Path
    marker: str
    layout: str
    remove_unmarked: bool = False
    keep_unpublished: bool = False
    unique_partials: bool = False
    accepts: Callable[[dict[str, Any]], bool] | None = None

    def record(self, cell: CellRef) -> CellRecord:
        """What the cell's directory holds for its present description.

        A directory made for another description, or whose marker or files are damaged,
        holds nothing: the cell runs again.
        """
        run_dir = self.folder / cell.path
        if _read_json(run_dir / self.marker) != cell.description:
            return CellRecord()
        metrics = _read_json(run_dir / METRICS)
        if isinstance(metrics, dict) and (self.accepts is None or self.accepts(metrics)):
            return CellRecord(metrics=metrics)
        failure = _read_json(run_dir / FAILURE)
        if isinstance(failure, dict) and isinstance(failure.get("reason"), str):
            return CellRecord(failure=failure)
        return CellRecord()

    def finished(self, cell: CellRef) -> bool:
        """Whether `cell` has a whole published run made for its present description."""
        return self.record(cell).metrics is not None

    def metrics(self, cell: CellRef) -> dict[str, Any]:
        """The `metrics.json` of a finished cell.

        Raises:
            GradleakError: the cell is not finished (or its metrics are damaged).
        """
        metrics = self.record(cell).metrics
        if metrics is None:
            raise GradleakError(f"{self.folder / cell.path} holds no finished run")
        return metrics

    def collect(self, cells: Iterable[tuple[T, CellRef]]) -> list[tuple[T, dict[str, Any]]]:
        """(cell, metrics) of every finished cell, in the order given.

        Args:
            cells: each study cell beside its reference.

        Returns:
            The finished ones only, each with the metrics its run wrote.
        """
        records = self.records(cells)
        return [(item, r.metrics) for item, r in records if r.metrics is not None]

    def records(self, cells: Iterable[tuple[T, CellRef]]) -> list[tuple[T, CellRecord]]:
        """(cell, record) of every finished or failed cell, in the order given."""
        records = ((item, self.record(ref)) for item, ref in cells)
        return [(item, r) for item, r in records if r.metrics is not None or r.failure]

    def record_failure(self, cell: CellRef, failure: dict[str, Any]) -> None:
        """Publish `cell` as failed: its directory holds the marker and `failure`.

        Args:
            cell: the cell whose run failed.
            failure: JSON-able, with `reason`: one line saying why.
        """

        def write(partial: Path) -> bool:
            partial.mkdir(parents=True, exist_ok=True)
            write_atomically(partial / FAILURE, json.dumps(to_plain(failure), indent=2) + "\n")
            return True

        self.publish(cell, write)

    def remove_leftovers(self) -> int:
        """Delete what an earlier call left half-written; returns how many directories.

        A partial directory whose process still runs on this host is kept: it is another
        call's work in progress.

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
        suffix = f"-{uuid.uuid4().hex[:8]}-{os.getpid()}@{this_host()}"
        partial = final.with_name(final.name + PARTIAL + (suffix if self.unique_partials else ""))
        if partial.exists():  # an earlier try at this cell that was kept for inspection
            shutil.rmtree(partial)
        published = False
        _WRITING.add(partial.name)
        try:
            outcome = write(partial)
            if outcome is None:
                return None
            marker = json.dumps(cell.description, indent=2) + "\n"
            write_atomically(partial / self.marker, marker)
            if final.exists():  # made for another description: this run replaces it
                shutil.rmtree(final)
            os.replace(partial, final)
            published = True
            return outcome
        finally:
            _WRITING.discard(partial.name)
            if not published and not self.keep_unpublished and partial.exists():
                # Errors here would hide the one that ended the run; the next call's
                # remove_leftovers deletes whatever stays.
                shutil.rmtree(partial, ignore_errors=True)

    def _complete(self, run_dir: Path) -> bool:
        """A published cell: its marker, and its metrics or its failure."""
        ended = (run_dir / METRICS).is_file() or (run_dir / FAILURE).is_file()
        return (run_dir / self.marker).is_file() and ended

    def _leftover(self, path: Path) -> bool:
        if not path.is_dir():
            return False
        if _LEFTOVER.fullmatch(path.name):
            owned = _OWNED.fullmatch(path.name)
            # On another host the folder's lock already keeps other studies out.
            in_progress = owned is not None and owned["host"] == this_host()
            if in_progress and int(owned["pid"]) == os.getpid():
                return path.name not in _WRITING
            return not (in_progress and process_alive(int(owned["pid"])))
        return self.remove_unmarked and not self._complete(path)


def _read_json(path: Path) -> Any:
    """The JSON in `path`; None when it is missing, unreadable or not JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # a damaged file: what it held counts as absent
        return None
