"""What a captured Flower run writes: flower-summary.csv (one row per client and round) and
flower-summary.html (PSNR per client and round, each reconstruction beside its original).

The page is self-contained like the run reports (`report/html.py`): pictures are embedded.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gradleak.core.files import write_atomically

SUMMARY_CSV = "flower-summary.csv"
SUMMARY_HTML = "flower-summary.html"
# The columns every row has, first; a client-side guard's reply metrics follow them.
COLUMNS = (
    "round",
    "node",
    "num_examples",
    "attacked",
    "attack",
    "status",
    "psnr",
    "ssim",
    "label_accuracy",
    "recovered_labels",
    "true_labels",
    "seconds",
    "run_dir",
    "error",
)


def write_flower_summary(root: Path, rows: Sequence[Mapping[str, object]]) -> dict[str, Path]:
    """Write flower-summary.csv and flower-summary.html into `root`.

    Args:
        root: the capture folder (run directories are relative to it).
        rows: one row per captured update (`worker.summary_row` and `attack_one`).

    Returns:
        The written files by name.
    """
    root.mkdir(parents=True, exist_ok=True)
    extra = sorted({key for row in rows for key in row} - set(COLUMNS))
    columns = [*COLUMNS, *extra]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: _cell(row.get(key)) for key in columns})
    write_atomically(root / SUMMARY_CSV, buffer.getvalue())
    from gradleak.report.html import render_flower_page

    render_flower_page(_page(root, rows, extra), root / SUMMARY_HTML)
    return {SUMMARY_CSV: root / SUMMARY_CSV, SUMMARY_HTML: root / SUMMARY_HTML}


def _cell(value: object) -> object:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return value


def _page(root: Path, rows: Sequence[Mapping[str, object]], extra: list[str]) -> dict[str, Any]:
    attacked = [r for r in rows if r.get("attacked")]
    scored = [float(r["psnr"]) for r in attacked if isinstance(r.get("psnr"), int | float)]
    failed = [r for r in attacked if r.get("status") == "error"]
    rounds = sorted({int(r["round"]) for r in rows})  # type: ignore[call-overload]
    facts = [
        ("rounds captured", str(len(rounds))),
        ("updates captured", str(len(rows))),
        ("updates attacked", str(len(attacked))),
        ("attacks that failed", str(len(failed))),
    ]
    if scored:
        facts.append(("PSNR, best / median", f"{max(scored):.2f} / {_median(scored):.2f} dB"))
    plot = None
    if scored and len(rounds) > 1:
        from gradleak.report.plots import axis_plot_png

        plotted = [r for r in attacked if isinstance(r.get("psnr"), int | float)]
        plot = axis_plot_png(plotted, "round", "psnr", values=rounds)
    return {
        "title": "What the server could reconstruct",
        "description": "Each client's update in each round, as the server received it, and "
        "what an honest-but-curious server recovered from it.",
        "facts": facts,
        "rounds": [
            {
                "round": number,
                "rows": [_entry(root, r, extra) for r in rows if int(r["round"]) == number],  # type: ignore[call-overload]
            }
            for number in rounds
        ],
        "extra": extra,
        "plot_png": plot,
    }


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def _entry(root: Path, row: Mapping[str, object], extra: list[str]) -> dict[str, Any]:
    run_dir = root / str(row["run_dir"]) if row.get("run_dir") else None
    picture = None
    if run_dir is not None:
        # grid.png shows the original above the reconstruction where the truth was known.
        for name in ("grid.png", "reconstruction.png"):
            if (run_dir / name).is_file():
                picture = (run_dir / name, 2 if name == "grid.png" else 1)
                break
    return {"row": row, "picture": picture, "extra": [row.get(k) for k in extra]}
