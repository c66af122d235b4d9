"""Run a sweep: one run directory per cell, resumable, on local workers or on Ray.

A cell runs in `cells/<name>.partial-…/` and is renamed to `cells/<name>/` only after its
outputs and its `cell.json` are written, so a crash or Ctrl-C never leaves a cell that looks
finished. On a re-run, finished cells whose `cell.json` matches are skipped and any
half-written directory is removed and run again (see studies/cells.py); so is a finished
cell whose `metrics.json` is damaged.

A cell whose run raises an error is recorded as failed (its `failure.json` holds the
one-line reason) and the sweep goes on; its row in results.csv has the status `failed`, and
a re-run of the sweep runs it again. Each row's `status` is otherwise its run's (ok,
diverged, no-progress; see studies/summary.py).

Cells that differ only in the image (and seed) they attack run as stacked attacks, in
chunks (`studies/stacking.py`, `scenario/stacked.py`): a backend receives chunks as jobs,
each cell of a chunk is published as its own run directory, and its metrics.json says how
many cells its attack was stacked with (`stacked`; `seconds` is the stack's time split
equally). `stack=False` runs every cell on its own.

One sweep at a time writes a folder: it holds the folder's `sweep.lock` while it runs
(studies/lock.py).

The tables' score columns are those of the modalities the sweep's cells attack
(`Modality.scores`; images: psnr, ssim, mse, label_accuracy). A sweep that mixes image and
text cells writes the union of their columns, and each row fills only its own modality's
(the others stay empty); a `modality` column names each row's whenever a sweep holds
anything but images, so an image sweep's tables are as they always were.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass, field, replace
from numbers import Real
from pathlib import Path
from typing import Any

import yaml
from tqdm.auto import tqdm

from gradleak.attacks.engine.step import Notice, print_notice
from gradleak.core.errors import GradleakError
from gradleak.core.files import replaced_atomically, write_atomically
from gradleak.modalities import MODALITIES, Modality, get_modality
from gradleak.report.tables import brief, brief_spread, score_format, write_csv
from gradleak.studies.cells import CellRecord, CellRef, CellStore, described_config
from gradleak.studies.lock import FolderLock
from gradleak.studies.stacking import CHUNK_CELLS, stack_chunks, tell_fallback
from gradleak.studies.summary import (
    COUNTED_STATUSES,
    DEFAULT_MODALITY,
    FAILED,
    MODALITY,
    OK,
    STATUS,
    modalities_of,
    modality_of,
    score_keys,
    status_of,
    summary_keys,
)
from gradleak.studies.summary import SWEEP_SETTING as GROUP_BY
from gradleak.studies.summary import sweep_summary as summarise
from gradleak.studies.sweep.backends import Backend, LocalBackend
from gradleak.studies.sweep.spec import Cell, SweepSpec

CELLS = "cells"
MARKER = "cell.json"
LOCK = "sweep.lock"
# Besides its modality's scores, what a cell's metrics.json must hold to count as finished;
# without one of these (or with a value that is not a number) the cell is damaged and runs
# again.
RUN_KEYS = ("seconds", "iterations")
# The longest reason a failed cell records, in characters (one line of the tables).
_REASON_CHARS = 300


@dataclass
class SweepResult:
    """What a call of `run_sweep` did, and the tables it wrote.

    Attributes:
        out_dir: the sweep folder.
        cells: the cells of the spec.
        ran: cells run by this call (finished or failed).
        skipped: cells already finished before this call.
        removed_partial: half-written cell directories of earlier calls removed.
        rows: results.csv's rows: every finished or failed cell.
        summary: summary.csv's rows.
        interrupted: whether Ctrl-C (or SIGTERM) ended the call.
    """

    out_dir: Path
    cells: int
    ran: int
    skipped: int
    removed_partial: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    summary: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False

    @property
    def failed(self) -> int:
        """Cells of the tables whose run failed."""
        return sum(1 for row in self.rows if status_of(row) == FAILED)

    @property
    def done(self) -> int:
        """Cells of the tables whose run ended (not failed)."""
        return len(self.rows) - self.failed

    @property
    def not_scored(self) -> int:
        """Cells whose run ended without an ordinary score (diverged, no progress)."""
        return sum(1 for row in self.rows if status_of(row) not in (OK, FAILED))


def cell_store(sweep_dir: Path) -> CellStore:
    """The sweep's cells: `cells/<name>/`, each finished one marked by its `cell.json`.

    Everything in `cells/` is a cell, so a directory there without its marker is
    half-written too.
    """
    # Cells may run in parallel processes or Ray tasks: each try gets its own partial folder.
    return CellStore(
        Path(sweep_dir),
        MARKER,
        layout=f"{CELLS}/*",
        remove_unmarked=True,
        unique_partials=True,
        accepts=metrics_whole,
    )


# Scores added after sweeps had already recorded cells: a cell without one is still whole
# (its row shows the score empty) rather than run again.
LATER_SCORES = frozenset({"exact_fraction"})


def metrics_whole(metrics: dict[str, Any]) -> bool:
    """Whether a cell's metrics hold every key a row reads (its modality's scores, seconds and
    iterations), numbers (or null) where they go; a modality gradleak does not know is not."""
    modality = MODALITIES.get(modality_of(metrics))
    if modality is None:
        return False
    keys = (*modality.scores, *RUN_KEYS)
    if any(key not in metrics for key in keys if key not in LATER_SCORES):
        return False
    numbers = all(
        metrics.get(key) is None
        or (isinstance(metrics[key], Real) and not isinstance(metrics[key], bool))
        for key in keys
    )
    return numbers and isinstance(metrics.get(STATUS, OK), str | None)


def result_columns(modalities: Sequence[Modality]) -> list[str]:
    """results.csv's columns: the cell, its axis values (and its modality, for a sweep that
    holds anything but images), its status, the modalities' scores, time and directory."""
    return [
        "cell",
        "attack",
        "model",
        "defense",
        "protocol",
        *_modality_column(modalities),
        "image",
        "seed",
        STATUS,
        *score_keys(modalities),
        *RUN_KEYS,
        "status_reason",
        "run_dir",
    ]


def summary_columns(modalities: Sequence[Modality]) -> list[str]:
    """summary.csv's columns: the setting, the cells and their statuses, the mean ± std of
    each summarised score, the mean label accuracy and the success rate."""
    spreads = [f"{key}_{stat}" for key in summary_keys(modalities) for stat in ("mean", "std")]
    return [
        *GROUP_BY,
        *_modality_column(modalities),
        "cells",
        *COUNTED_STATUSES.values(),
        *spreads,
        "label_accuracy_mean",
        "success_rate",
    ]


def _modality_column(modalities: Sequence[Modality]) -> list[str]:
    only_default = [m.name for m in modalities] in ([], [DEFAULT_MODALITY])
    return [] if only_default else [MODALITY]


def sweep_modalities(spec: SweepSpec) -> list[Modality]:
    """The modalities of the sweep's cells, in the order of the registry (images first)."""
    names = spec.modalities()
    return [get_modality(name) for name in MODALITIES if name in names]


def cell_job(
    spec: SweepSpec,
    cell: Cell,
    sweep_dir: Path,
    threads: int,
    progress: bool = False,
    device: str | None = None,
) -> dict[str, Any]:
    """What a worker needs to run one cell (plain data: it crosses process boundaries).

    `device` (None: the spec's, by default auto) travels as spelled and is resolved where
    the cell runs; it is not part of the cell's description, so a cell finished on one
    device is reused on another.
    """
    config = replace(spec.run_config(cell, sweep_dir / CELLS / cell.name), progress=progress)
    return {
        "config": config if device is None else replace(config, device=device),
        "cell": cell,
        "description": _description(spec, cell),
        "sweep_dir": str(sweep_dir),
        "threads": threads,
    }


def run_cell(job: dict[str, Any]) -> dict[str, Any]:
    """Run one cell and publish it, or record it as failed; returns its results row.

    Args:
        job: from `cell_job`.

    Returns:
        The cell's row of results.csv; if its run raised an error, a row with the status
        `failed` and the one-line reason, which the cell's `failure.json` records too.

    Raises:
        KeyboardInterrupt: if Ctrl-C (or SIGTERM) reached the cell; nothing of it is left.
    """
    import torch

    from gradleak.scenario.run import run_attack

    torch.set_num_threads(job["threads"])
    cell: Cell = job["cell"]
    store = cell_store(Path(job["sweep_dir"]))
    ref = CellRef(_cell_path(cell), job["description"])

    def write(partial: Path) -> bool | None:
        result = run_attack(replace(job["config"], out=partial))
        return None if result.reconstruction.interrupted else True

    modality = job["config"].modality
    try:
        published = store.publish(ref, write)
    except Exception as exc:  # the cell cannot run: recorded, and the sweep goes on
        failure = {STATUS: FAILED, "reason": _reason(exc), "traceback": traceback.format_exc()}
        store.record_failure(ref, failure)
        return _row(cell, CellRecord(failure=failure), modality)
    if published is None:  # an interrupted attack is not a result
        raise KeyboardInterrupt
    return _row(cell, store.record(ref), modality)


def chunk_job(jobs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What a worker needs to run a chunk of cells (`cell_job`s) as stacked attacks."""
    return {"cells": list(jobs)}


def run_chunk(job: dict[str, Any]) -> dict[str, Any]:
    """Run a chunk of cells as stacked attacks and publish each; returns their rows.

    A chunk of one cell runs as `run_cell`. A chunk whose stacked attack cannot run (a
    cell's data, a stack the attack refuses) runs its unfinished cells one by one, so that
    each cell records its own result or failure.

    Args:
        job: from `chunk_job`.

    Returns:
        {"rows": the cells' rows of results.csv, in the chunk's order}.

    Raises:
        KeyboardInterrupt: if Ctrl-C (or SIGTERM) reached the chunk's attack: none of its
            cells is published; or reached a cell while it was written (the cells
            published before it stay).
    """
    import torch

    from gradleak.scenario.stacked import run_stacked

    cells: list[dict[str, Any]] = job["cells"]
    if len(cells) == 1:
        return {"rows": [run_cell(cells[0])]}
    torch.set_num_threads(cells[0]["threads"])
    store = cell_store(Path(cells[0]["sweep_dir"]))
    refs = [CellRef(_cell_path(c["cell"]), c["description"]) for c in cells]

    def publish(i: int, write: Any) -> object:
        return store.publish(refs[i], write)

    try:
        run_stacked([c["config"] for c in cells], publish)
    except Exception as exc:  # noqa: BLE001 - each cell alone then records its own outcome
        tell_fallback(len(cells), exc)
        rows = []
        for cell, ref in zip(cells, refs, strict=True):
            record = store.record(ref)
            done = record.metrics is not None
            modality = cell["config"].modality
            rows.append(_row(cell["cell"], record, modality) if done else run_cell(cell))
        return {"rows": rows}
    return {
        "rows": [
            _row(c["cell"], store.record(ref), c["config"].modality)
            for c, ref in zip(cells, refs, strict=True)
        ]
    }


def _reason(exc: Exception) -> str:
    """One line: a GradleakError's message; otherwise the error's type and first line."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if not isinstance(exc, GradleakError):
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text[:_REASON_CHARS]


def run_sweep(
    spec: SweepSpec,
    out_dir: Path,
    *,
    backend: Backend | None = None,
    progress: bool = True,
    threads: int | None = None,
    notice: Notice = print_notice,
    device: str | None = None,
    stack: bool = True,
) -> SweepResult:
    """Run every cell of `spec` not already finished under `out_dir`; collect the tables.

    Finished cells whose description is unchanged are skipped; half-written, damaged and
    failed ones run again. A cell that fails is recorded and the sweep goes on. After
    Ctrl-C or SIGTERM the tables are written from the finished cells.

    Args:
        spec: the checked sweep (see `studies/sweep/spec.py`).
        out_dir: the sweep folder (cells under `cells/`, tables beside them).
        backend: where cells run (default: one at a time in this process).
        progress: show the sweep's progress bar (and each attack's, one worker only).
        threads: torch threads per cell (default: the cores over the workers).
        notice: where the line saying a stale lock was taken over goes.
        device: where each cell computes (auto, cpu, cuda, cuda:N, mps), resolved by the
            worker that runs it (None: the spec's, by default auto).
        stack: run cells that differ only in the image and seed they attack as stacked
            attacks, in chunks (default); False: every cell on its own.

    Returns:
        How many cells there are, ran now, were skipped or removed, the rows, the summary
        and whether Ctrl-C ended the sweep.

    Raises:
        GradleakError: the sweep folder cannot be written, another sweep that still runs
            holds it, or a half-written cell cannot be removed (the tables of the finished
            cells are written first where cells ran).
    """
    backend = backend or LocalBackend(workers=1)
    out_dir = Path(out_dir)
    try:
        (out_dir / CELLS).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GradleakError(f"cannot write the sweep directory {out_dir}: {exc}") from exc
    with FolderLock(out_dir, LOCK, "sweep", notice):
        try:
            write_atomically(out_dir / "spec.yaml", yaml.safe_dump(spec.to_dict(), sort_keys=False))
        except OSError as exc:
            raise GradleakError(f"cannot write the sweep directory {out_dir}: {exc}") from exc
        return _run_cells(spec, out_dir, backend, progress, threads, device, stack)


def _run_cells(
    spec: SweepSpec,
    out_dir: Path,
    backend: Backend,
    progress: bool,
    threads: int | None,
    device: str | None = None,
    stack: bool = True,
) -> SweepResult:
    store = cell_store(out_dir)
    removed = store.remove_leftovers()
    cells = spec.cells()
    pending = [c for c in cells if not store.finished(_ref(spec, c))]
    per_job = threads or max(1, (os.cpu_count() or 1) // backend.workers)
    # Each attack's own progress bar only when cells run here, one at a time.
    attack_bars = progress and isinstance(backend, LocalBackend) and backend.workers == 1
    cell_jobs = [cell_job(spec, c, out_dir, per_job, attack_bars, device) for c in pending]
    # Backends receive chunks: a group of cells that share their attack, or one cell.
    size = CHUNK_CELLS if stack else 1
    chunks = stack_chunks(cell_jobs, lambda job: job["config"], size=size, workers=backend.workers)
    jobs = [chunk_job(chunk) for chunk in chunks]
    result = SweepResult(out_dir, len(cells), 0, len(cells) - len(pending), removed)
    bar = tqdm(
        total=len(cells),
        initial=result.skipped,
        desc="sweep",
        unit="cell",
        disable=None if progress else True,
    )
    try:
        with closing(iter(backend.run(run_chunk, jobs))) as chunks_done:  # stopped here
            for done in chunks_done:
                result.ran += len(done["rows"])
                bar.update(len(done["rows"]))
    except KeyboardInterrupt:
        result.interrupted = True
    except BaseException:
        _write_results(spec, result)  # a failing cell: keep the tables of the finished ones
        raise
    finally:
        bar.close()
    _write_results(spec, result)
    return result


def _write_results(spec: SweepSpec, result: SweepResult) -> None:
    # The spec's modalities, not the finished rows': the columns stay put while cells finish.
    modalities = sweep_modalities(spec)
    result.rows = collect_results(spec, result.out_dir)
    result.summary = summarise(result.rows, spec.success_psnr, modalities)
    write_tables(result.out_dir, result.rows, result.summary, modalities)


def _cell_path(cell: Cell) -> Path:
    return Path(CELLS) / cell.name


def _description(spec: SweepSpec, cell: Cell) -> dict[str, Any]:
    """What makes a finished cell valid for this spec: its axis values and full config."""
    config = described_config(spec.run_config(cell, Path(".")))
    return {"cell": cell.name, **cell.axis_values(), "config": config}


def _ref(spec: SweepSpec, cell: Cell) -> CellRef:
    return CellRef(_cell_path(cell), _description(spec, cell))


def _row(cell: Cell, record: CellRecord, modality: str) -> dict[str, Any]:
    """A cell's row of results.csv: its axis values, modality, status, its modality's scores
    and its run directory.

    Args:
        cell: the cell.
        record: what its directory holds: its run's metrics, or why it failed.
        modality: the modality the cell's configuration names (a failed cell's only one).
    """
    metrics, failure = record.metrics or {}, record.failure or {}
    name = str(metrics.get(MODALITY) or modality)
    return {
        "cell": cell.name,
        **cell.axis_values(),
        MODALITY: name,
        STATUS: FAILED if record.failure else status_of(metrics),
        **{k: metrics.get(k) for k in (*get_modality(name).scores, *RUN_KEYS)},
        "status_reason": failure.get("reason") or metrics.get("status_reason"),
        "run_dir": _cell_path(cell).as_posix(),
    }


def collect_results(spec: SweepSpec, out_dir: Path) -> list[dict[str, Any]]:
    """One row per finished or failed cell of `spec`, in the spec's order."""
    records = cell_store(out_dir).records((c, _ref(spec, c)) for c in spec.cells())
    return [_row(cell, record, spec.modality(cell)) for cell, record in records]


def write_tables(
    out_dir: Path,
    rows: list[dict[str, Any]],
    summary: list[dict[str, Any]],
    modalities: Sequence[Modality] | None = None,
) -> None:
    """results.csv, summary.csv, summary.md (and results.parquet when pyarrow is there),
    each replaced whole.

    Args:
        out_dir: the sweep folder.
        rows: the results rows.
        summary: the summary rows.
        modalities: whose score columns the tables hold (default: the rows' modalities).
    """
    if modalities is None:
        modalities = modalities_of(rows)
    columns = result_columns(modalities)
    with replaced_atomically(out_dir / "results.csv") as partial:
        write_csv(partial, columns, rows)
    with replaced_atomically(out_dir / "summary.csv") as partial:
        write_csv(partial, summary_columns(modalities), summary)
    write_atomically(out_dir / "summary.md", summary_markdown(summary, rows, modalities))
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return
    table = pa.Table.from_pylist([{k: r.get(k) for k in columns} for r in rows])
    with replaced_atomically(out_dir / "results.parquet") as partial:
        pq.write_table(table, partial)


def summary_markdown(
    summary: Sequence[dict[str, Any]],
    rows: Sequence[dict[str, Any]] = (),
    modalities: Sequence[Modality] | None = None,
) -> str:
    """The summary table (one per modality when the sweep mixes them, each headed by its
    modality and showing its own scores); below it the cells that failed, each with its
    reason.

    Scores average the cells whose run ended ok; `not scored` counts the others.
    """
    if modalities is None:
        modalities = modalities_of([*summary, *rows])
    lines: list[str] = []
    for modality in modalities:
        members = [s for s in summary if modality_of(s) == modality.name]
        if len(modalities) > 1:
            if lines:
                lines.append("")
            lines += [f"{modality.name.capitalize()} cells:", ""]
        lines += _summary_table(members, modality)
    failed = [row for row in rows if status_of(row) == FAILED]
    if failed:
        lines += ["", f"Failed cells ({len(failed)}; a re-run of the sweep runs them again):", ""]
        lines += [f"- {row['cell']}: {row['status_reason']}" for row in failed]
    return "\n".join(lines) + "\n"


def _summary_table(summary: Sequence[dict[str, Any]], modality: Modality) -> list[str]:
    """The markdown table of one modality's settings: its summarised scores as mean ± std."""
    keys = modality.summary_scores
    head = ["attack", "model", "defense", "protocol", "cells"]
    head += [score_format(key).column for key in keys]
    head += [score_format("label_accuracy").column, "success", "not scored"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in summary:
        success = "n/a" if s["success_rate"] is None else f"{s['success_rate']:.0%}"
        apart = [
            f"{s[column]} {status}" for status, column in COUNTED_STATUSES.items() if s[column]
        ]
        cells = [s["attack"], s["model"], s["defense"], s["protocol"], s["cells"]]
        cells += [brief_spread(s.get(f"{k}_mean"), s.get(f"{k}_std"), k) for k in keys]
        cells += [brief(s["label_accuracy_mean"], "label_accuracy"), success]
        cells.append(", ".join(apart) or "–")
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return lines
