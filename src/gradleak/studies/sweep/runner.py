"""Run a sweep: one run directory per cell, resumable, on local workers or on Ray.

A cell runs in `cells/<name>.partial/` and is renamed to `cells/<name>/` only after its
outputs and its `cell.json` are written, so a crash or Ctrl-C never leaves a cell that looks
finished. On a re-run, finished cells whose `cell.json` matches are skipped and any
half-written directory is removed and run again (see studies/cells.py).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml
from tqdm.auto import tqdm

from gradleak.core.errors import GradleakError
from gradleak.report.tables import write_csv
from gradleak.studies.cells import CellRef, CellStore, described_config
from gradleak.studies.summary import SWEEP_SETTING as GROUP_BY
from gradleak.studies.summary import sweep_summary as summarise
from gradleak.studies.sweep.backends import Backend, LocalBackend
from gradleak.studies.sweep.spec import Cell, SweepSpec

CELLS = "cells"
MARKER = "cell.json"
RESULT_COLUMNS = [
    "cell",
    "attack",
    "model",
    "defense",
    "protocol",
    "image",
    "seed",
    "psnr",
    "ssim",
    "mse",
    "label_accuracy",
    "seconds",
    "iterations",
    "run_dir",
]


@dataclass
class SweepResult:
    out_dir: Path
    cells: int
    ran: int
    skipped: int
    removed_partial: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    summary: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False


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
    )


def cell_job(
    spec: SweepSpec, cell: Cell, sweep_dir: Path, threads: int, progress: bool = False
) -> dict[str, Any]:
    """What a worker needs to run one cell (plain data: it crosses process boundaries)."""
    return {
        "config": replace(spec.run_config(cell, sweep_dir / CELLS / cell.name), progress=progress),
        "cell": cell,
        "description": _description(spec, cell),
        "sweep_dir": str(sweep_dir),
        "threads": threads,
    }


def run_cell(job: dict[str, Any]) -> dict[str, Any]:
    """Run one cell and publish it; returns its results row.

    Args:
        job: from `cell_job`.

    Returns:
        The cell's row of results.csv.

    Raises:
        KeyboardInterrupt: if Ctrl-C reached the attack; nothing of the cell is left.
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

    if store.publish(ref, write) is None:  # an interrupted attack is not a result
        raise KeyboardInterrupt
    return _row(cell, store.metrics(ref))


def run_sweep(
    spec: SweepSpec,
    out_dir: Path,
    *,
    backend: Backend | None = None,
    progress: bool = True,
    threads: int | None = None,
) -> SweepResult:
    """Run every cell of `spec` not already finished under `out_dir`; collect the tables.

    Finished cells whose description is unchanged are skipped, half-written ones removed
    and run again; after Ctrl-C the tables are written from the finished cells.

    Args:
        spec: the checked sweep (see `studies/sweep/spec.py`).
        out_dir: the sweep folder (cells under `cells/`, tables beside them).
        backend: where cells run (default: one at a time in this process).
        progress: show the sweep's progress bar (and each attack's, one worker only).
        threads: torch threads per cell (default: the cores over the workers).

    Returns:
        How many cells there are, ran now, were skipped or removed, the rows, the summary
        and whether Ctrl-C ended the sweep.

    Raises:
        GradleakError: the sweep folder cannot be written, a cell's settings cannot run or a
            half-written cell cannot be removed (the tables of the finished cells are written
            first).
    """
    backend = backend or LocalBackend(workers=1)
    out_dir = Path(out_dir)
    try:
        (out_dir / CELLS).mkdir(parents=True, exist_ok=True)
        (out_dir / "spec.yaml").write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False))
    except OSError as exc:
        raise GradleakError(f"cannot write the sweep directory {out_dir}: {exc}") from exc
    store = cell_store(out_dir)
    removed = store.remove_leftovers()
    cells = spec.cells()
    pending = [c for c in cells if not store.finished(_ref(spec, c))]
    per_job = threads or max(1, (os.cpu_count() or 1) // backend.workers)
    # Each attack's own progress bar only when cells run here, one at a time.
    attack_bars = progress and isinstance(backend, LocalBackend) and backend.workers == 1
    jobs = [cell_job(spec, c, out_dir, per_job, attack_bars) for c in pending]
    result = SweepResult(out_dir, len(cells), 0, len(cells) - len(pending), removed)
    bar = tqdm(
        total=len(cells),
        initial=result.skipped,
        desc="sweep",
        unit="cell",
        disable=None if progress else True,
    )
    try:
        for _ in backend.run(run_cell, jobs):
            result.ran += 1
            bar.update(1)
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
    result.rows = collect_results(spec, result.out_dir)
    result.summary = summarise(result.rows, spec.success_psnr)
    write_tables(result.out_dir, result.rows, result.summary)


def _cell_path(cell: Cell) -> Path:
    return Path(CELLS) / cell.name


def _description(spec: SweepSpec, cell: Cell) -> dict[str, Any]:
    """What makes a finished cell valid for this spec: its axis values and full config."""
    config = described_config(spec.run_config(cell, Path(".")))
    return {"cell": cell.name, **cell.axis_values(), "config": config}


def _ref(spec: SweepSpec, cell: Cell) -> CellRef:
    return CellRef(_cell_path(cell), _description(spec, cell))


def _row(cell: Cell, metrics: dict[str, Any]) -> dict[str, Any]:
    return {
        "cell": cell.name,
        **cell.axis_values(),
        **{k: metrics.get(k) for k in ("psnr", "ssim", "mse", "label_accuracy")},
        "seconds": metrics.get("seconds"),
        "iterations": metrics.get("iterations"),
        "run_dir": _cell_path(cell).as_posix(),
    }


def collect_results(spec: SweepSpec, out_dir: Path) -> list[dict[str, Any]]:
    """One row per finished cell of `spec`, in the spec's order."""
    finished = cell_store(out_dir).collect((c, _ref(spec, c)) for c in spec.cells())
    return [_row(cell, metrics) for cell, metrics in finished]


def write_tables(out_dir: Path, rows: list[dict[str, Any]], summary: list[dict[str, Any]]) -> None:
    """results.csv, summary.csv, summary.md (and results.parquet when pyarrow is there)."""
    write_csv(out_dir / "results.csv", RESULT_COLUMNS, rows)
    summary_columns = [*GROUP_BY, "cells", "psnr_mean", "psnr_std", "ssim_mean", "ssim_std"]
    summary_columns += ["label_accuracy_mean", "success_rate"]
    write_csv(out_dir / "summary.csv", summary_columns, summary)
    (out_dir / "summary.md").write_text(summary_markdown(summary))
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return
    table = pa.Table.from_pylist([{k: r.get(k) for k in RESULT_COLUMNS} for r in rows])
    pq.write_table(table, out_dir / "results.parquet")


def summary_markdown(summary: Sequence[dict[str, Any]]) -> str:
    def fmt(mean: float | None, std: float | None, digits: int) -> str:
        if mean is None:
            return "n/a"
        return f"{mean:.{digits}f} ± {std:.{digits}f}"

    lines = [
        "| attack | model | defense | protocol | cells | PSNR dB | SSIM | label acc. | success |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        labels = "n/a" if s["label_accuracy_mean"] is None else f"{s['label_accuracy_mean']:.2f}"
        lines.append(
            f"| {s['attack']} | {s['model']} | {s['defense']} | {s['protocol']} | {s['cells']} "
            f"| {fmt(s['psnr_mean'], s['psnr_std'], 2)} | {fmt(s['ssim_mean'], s['ssim_std'], 3)} "
            f"| {labels} | {s['success_rate']:.0%} |"
        )
    return "\n".join(lines) + "\n"
