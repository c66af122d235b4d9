"""Run a sweep: one run directory per cell, resumable, on local workers or on Ray.

A cell runs in `cells/<name>.partial-<id>/` and is renamed to `cells/<name>/` only after
its outputs and its `cell.json` are written, so a crash or Ctrl-C never leaves a cell that
looks finished. On a re-run, finished cells whose `cell.json` matches are skipped and any
half-written directory is removed and run again.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import statistics
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml
from tqdm.auto import tqdm

from gradleak.core.errors import GradleakError
from gradleak.core.settings import to_plain
from gradleak.report.tables import write_csv
from gradleak.studies.sweep.backends import Backend, LocalBackend
from gradleak.studies.sweep.spec import Cell, SweepSpec

CELLS = "cells"
MARKER = "cell.json"
PARTIAL = ".partial-"
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
GROUP_BY = ("attack", "model", "defense", "protocol")


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
    """Run one cell into a partial directory and publish it; returns its results row."""
    import torch

    from gradleak.scenario.run import run_attack

    torch.set_num_threads(job["threads"])
    cell: Cell = job["cell"]
    sweep_dir = Path(job["sweep_dir"])
    final = sweep_dir / CELLS / cell.name
    partial = final.with_name(f"{cell.name}{PARTIAL}{uuid.uuid4().hex[:8]}")
    try:
        result = run_attack(replace(job["config"], out=partial))
        if result.reconstruction.interrupted:  # Ctrl-C reached the attack: not a result
            raise KeyboardInterrupt
        (partial / MARKER).write_text(json.dumps(job["description"], indent=2))
        if final.exists():
            shutil.rmtree(final)
        os.replace(partial, final)
    finally:
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)
    return _row(cell, json.loads((final / "metrics.json").read_text()), sweep_dir)


def run_sweep(
    spec: SweepSpec,
    out_dir: Path,
    *,
    backend: Backend | None = None,
    progress: bool = True,
    threads: int | None = None,
) -> SweepResult:
    """Run every cell of `spec` not already finished under `out_dir`; collect the tables."""
    backend = backend or LocalBackend(workers=1)
    out_dir = Path(out_dir)
    try:
        (out_dir / CELLS).mkdir(parents=True, exist_ok=True)
        (out_dir / "spec.yaml").write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False))
    except OSError as exc:
        raise GradleakError(f"cannot write the sweep directory {out_dir}: {exc}") from exc
    removed = _remove_partial(out_dir)
    cells = spec.cells()
    pending = [c for c in cells if not _finished(spec, c, out_dir)]
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


def _description(spec: SweepSpec, cell: Cell) -> dict[str, Any]:
    """What makes a finished cell valid for this spec: its axis values and full config."""
    config = to_plain(spec.run_config(cell, Path(".")))
    config.pop("out", None)
    config.pop("progress", None)
    return {"cell": cell.name, **cell.axis_values(), "config": config}


def _complete(cell_dir: Path) -> bool:
    return (cell_dir / MARKER).is_file() and (cell_dir / "metrics.json").is_file()


def _finished(spec: SweepSpec, cell: Cell, out_dir: Path) -> bool:
    final = out_dir / CELLS / cell.name
    if not _complete(final):
        return False
    try:
        return json.loads((final / MARKER).read_text()) == _description(spec, cell)
    except json.JSONDecodeError:
        return False


def _remove_partial(out_dir: Path) -> int:
    """Delete what a crash left: partial directories and cells without their marker."""
    half = [p for p in (out_dir / CELLS).iterdir() if PARTIAL in p.name or not _complete(p)]
    for path in half:
        shutil.rmtree(path, ignore_errors=True)
    return len(half)


def _row(cell: Cell, metrics: dict[str, Any], sweep_dir: Path) -> dict[str, Any]:
    return {
        "cell": cell.name,
        **cell.axis_values(),
        **{k: metrics.get(k) for k in ("psnr", "ssim", "mse", "label_accuracy")},
        "seconds": metrics.get("seconds"),
        "iterations": metrics.get("iterations"),
        "run_dir": f"{CELLS}/{cell.name}",
    }


def collect_results(spec: SweepSpec, out_dir: Path) -> list[dict[str, Any]]:
    """One row per finished cell of `spec`, in the spec's order."""
    rows = []
    for cell in spec.cells():
        if _finished(spec, cell, out_dir):
            metrics = json.loads((out_dir / CELLS / cell.name / "metrics.json").read_text())
            rows.append(_row(cell, metrics, out_dir))
    return rows


def summarise(rows: Sequence[dict[str, Any]], success_psnr: float) -> list[dict[str, Any]]:
    """Per setting (attack, model, defense, protocol): mean ± std and success rate."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in GROUP_BY), []).append(row)
    summary = []
    for key, members in groups.items():
        psnr = _finite(r["psnr"] for r in members)
        ssim = _finite(r["ssim"] for r in members)
        labels = _finite(r["label_accuracy"] for r in members)
        summary.append(
            {
                **dict(zip(GROUP_BY, key, strict=True)),
                "cells": len(members),
                "psnr_mean": _mean(psnr),
                "psnr_std": _std(psnr),
                "ssim_mean": _mean(ssim),
                "ssim_std": _std(ssim),
                "label_accuracy_mean": _mean(labels),
                "success_rate": sum(p >= success_psnr for p in psnr) / len(members),
            }
        )
    return summary


def _finite(values: Iterator[Any]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _std(values: list[float]) -> float | None:
    return statistics.pstdev(values) if values else None


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
