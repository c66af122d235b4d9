"""What an audit writes: audit.json (everything), audit.md and the printed verdict table,
audit.html (the verdict on top, the worst reconstructions beside their originals) and
worst.png.

The page is self-contained like the run reports (`report/html.py`): pictures are embedded.
"""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL.Image import Image

from gradleak.core.files import write_atomically
from gradleak.core.settings import to_plain
from gradleak.report.images import resolve_scale, save_png, tile_rows, to_pil
from gradleak.studies.audit.runner import AuditResult, Shown
from gradleak.studies.audit.scores import (
    LABELS_LEAK,
    RECOGNISABLE_PSNR,
    RECOGNISABLE_ROUGE1,
    RECOGNISABLE_SSIM,
    AttackSummary,
)
from gradleak.studies.audit.settings import GATE_KEYS

AUDIT_JSON = "audit.json"
AUDIT_MD = "audit.md"
AUDIT_HTML = "audit.html"
WORST_PNG = "worst.png"

THRESHOLDS = (
    f"An image counts as recognisably reconstructed at SSIM ≥ {RECOGNISABLE_SSIM:g} (images "
    f"below the 11×11 SSIM window: PSNR ≥ {RECOGNISABLE_PSNR:g} dB), a sentence at ROUGE-1 ≥ "
    f"{RECOGNISABLE_ROUGE1:g}. Relative leakage = (SSIM(x̂, x) − SSIM(x̄, x)) / (1 − SSIM(x̄, x)) "
    "with x̄ the dataset's mean image (text: ROUGE-1 against a sentence of the most frequent "
    "words): 0 is no better than knowing nothing about the image, 1 an exact copy. "
    "'Worst' is the best-reconstructed item, the privacy worst case. Labels leak when the "
    f"best attack recovers at least {LABELS_LEAK:.0%} of them."
)

# The verdict table's columns: (header, score key, format); None key: from the summary.
_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("labels", "labels", ".0%"),
    ("PSNR median", "psnr", ".1f"),
    ("PSNR worst", "worst-psnr", ".1f"),
    ("SSIM median", "ssim", ".3f"),
    ("SSIM worst", "worst-ssim", ".3f"),
    ("recognisable", "recognisable", ".0%"),
    ("leakage median", "leakage", ".2f"),
)
_TEXT_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("exact", "exact", ".0%"),
    ("ROUGE-1 median", "rouge1", ".3f"),
    ("recognisable", "recognisable", ".0%"),
    ("leakage median", "leakage", ".2f"),
)


def _columns(result: AuditResult) -> tuple[tuple[str, str, str], ...]:
    return _COLUMNS if result.settings.run.modality == "image" else _TEXT_COLUMNS


def _value(value: Any, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def table_rows(result: AuditResult) -> tuple[list[str], list[list[str]]]:
    """The verdict table: a header and one row per attack, then the overall row."""
    columns = _columns(result)
    header = ["attack", "status", *(c[0] for c in columns), "iterations", "seconds"]
    rows = []
    for a in result.attacks:
        status = a.status
        cells = [_value(a.scores.get(key), spec) for _, key, spec in columns]
        rows.append([a.attack, status, *cells, str(a.iterations or "–"), f"{a.seconds:.1f}"])
    row = result.overall
    total = [_value(row.get(key), spec) for _, key, spec in columns]
    rows.append(["overall", result.verdict.level, *total, "", f"{result.seconds:.1f}"])
    return header, rows


def markdown_table(result: AuditResult) -> str:
    """The verdict table in markdown."""
    header, rows = table_rows(result)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def verdict_lines(result: AuditResult) -> list[str]:
    """The verdict, the gates and why attacks did not run, for the terminal and audit.md."""
    v = result.verdict
    lines = [f"VERDICT: {v.level} — {v.summary}."]
    for gate in v.failed:
        lines.append(
            f"FAIL: {gate.key} = {result.overall[gate.key]:.4g} is above {gate.limit:g} "
            f"({GATE_KEYS[gate.key]})"
        )
    for gate in v.unmet:
        lines.append(f"FAIL: no attack produced {gate.key}, so --fail-above {gate} cannot pass")
    passed = [g for g in result.settings.gates if g not in v.failed and g not in v.unmet]
    for gate in passed:
        lines.append(f"pass: {gate.key} = {result.overall[gate.key]:.4g} ≤ {gate.limit:g}")
    for a in result.attacks:
        if a.status in ("skipped", "failed") and a.reason:
            lines.append(f"{a.attack} {a.status}: {a.reason}")
    if result.interrupted:
        lines.append("interrupted: the scores cover the attacks that ran before the interrupt")
    return lines


def audit_record(result: AuditResult) -> dict[str, Any]:
    """Everything the audit found, as plain JSON values."""
    settings = result.settings
    return to_plain(
        {
            "verdict": {
                "level": result.verdict.level,
                "summary": result.verdict.summary,
                "passed": result.verdict.passed,
                "failed": [str(g) for g in result.verdict.failed],
                "unmet": [str(g) for g in result.verdict.unmet],
            },
            "setup": result.description,
            "device": result.device,
            "budget_seconds": settings.budget,
            "seconds": round(result.seconds, 3),
            "setup_seconds": round(result.setup_seconds, 3),
            "interrupted": result.interrupted,
            "samples": settings.samples,
            "gates": [str(g) for g in settings.gates],
            "thresholds": {
                "recognisable_ssim": RECOGNISABLE_SSIM,
                "recognisable_psnr": RECOGNISABLE_PSNR,
                "recognisable_rouge1": RECOGNISABLE_ROUGE1,
                "labels_leak": LABELS_LEAK,
                "definition": THRESHOLDS,
            },
            "overall": result.overall,
            "attacks": [dataclasses.asdict(a) for a in result.attacks],
            "items": [dataclasses.asdict(i) for i in result.items],
            "worst": [{"attack": s.attack, **dataclasses.asdict(s.item)} for s in result.worst],
            "run": dataclasses.asdict(settings.run),
        }
    )


def _worst_picture(worst: Sequence[Shown]) -> Image | None:
    images = [s for s in worst if isinstance(s.original, torch.Tensor)]
    if not images:
        return None
    top = [to_pil(s.original) for s in images]
    bottom = [to_pil(s.recovered) for s in images]  # type: ignore[arg-type]
    return tile_rows([top, bottom], resolve_scale(images[0].original.shape[-2], None))


def write_audit(result: AuditResult, folder: Path) -> dict[str, Path]:
    """Write audit.json, audit.md, audit.html and worst.png (images) into `folder`.

    Args:
        result: what the audit found.
        folder: an existing folder.

    Returns:
        The written files by name.
    """
    from gradleak.report.html import render_audit_page

    written = {}
    record = audit_record(result)
    write_atomically(folder / AUDIT_JSON, json.dumps(record, indent=2, allow_nan=False) + "\n")
    written[AUDIT_JSON] = folder / AUDIT_JSON
    md = [f"# gradleak audit: {result.verdict.level}", "", result.description, ""]
    md += [line + "  " for line in verdict_lines(result)]
    md += ["", markdown_table(result), THRESHOLDS, ""]
    write_atomically(folder / AUDIT_MD, "\n".join(md))
    written[AUDIT_MD] = folder / AUDIT_MD
    picture = _worst_picture(result.worst)
    png = None
    if picture is not None:
        save_png(picture, folder / WORST_PNG)
        written[WORST_PNG] = folder / WORST_PNG
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        png = buffer.getvalue()
    render_audit_page(_page(result, png), folder / AUDIT_HTML)
    written[AUDIT_HTML] = folder / AUDIT_HTML
    return written


def _page(result: AuditResult, worst_png: bytes | None) -> dict[str, Any]:
    header, rows = table_rows(result)
    return {
        "title": f"Audit: {result.verdict.level}",
        "level": result.verdict.level,
        "summary": result.verdict.summary,
        "lines": verdict_lines(result)[1:],
        "description": result.description,
        "header": header,
        "rows": rows,
        "worst_png": worst_png,
        "worst": [_worst_entry(s) for s in result.worst],
        "thresholds": THRESHOLDS,
        "facts": [
            ("device", result.device),
            ("budget", f"{result.settings.budget:g} s"),
            ("took", f"{result.seconds:.1f} s (setting up {result.setup_seconds:.1f} s)"),
            ("updates attacked", str(result.settings.samples)),
            ("gates", ", ".join(str(g) for g in result.settings.gates) or "none"),
        ],
        "attacks": [_attack_entry(a) for a in result.attacks],
    }


def _worst_entry(shown: Shown) -> dict[str, Any]:
    item = shown.item
    scores = (
        f"PSNR {item.psnr:.1f} dB, SSIM {_value(item.ssim, '.3f')}"
        if item.psnr is not None
        else f"ROUGE-1 {_value(item.rouge1, '.3f')}{', exact' if item.exact else ''}"
    )
    return {
        "caption": f"{shown.attack} · update {item.sample}, item {item.data_index} · {scores} · "
        f"leakage {item.leakage:.2f}",
        "original": shown.original if isinstance(shown.original, str) else None,
        "recovered": shown.recovered if isinstance(shown.recovered, str) else None,
    }


def _attack_entry(a: AttackSummary) -> Mapping[str, Any]:
    options = ", ".join(f"{k}={v}" for k, v in a.options.items()) or "preset"
    return {
        "name": a.attack,
        "purpose": a.purpose,
        "status": a.status,
        "reason": a.reason or "",
        "options": options,
    }
