"""What the demo reports: the global model's held-out accuracy, and what the server saw.

The server's figures come from the `flower-summary.csv` that `CuriousStrategy` writes (one
row per client and round); the tables here only regroup them by client.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from flwr.app import ArrayRecord, MetricRecord
from torch.nn import functional as F

from fldemo.apps import Evaluate
from fldemo.data import ClientData
from fldemo.settings import Demo

SUMMARY = "flower-summary.csv"
EVAL_BATCH = 500  # held-out images scored at once


def held_out_evaluation(demo: Demo, data: ClientData) -> Evaluate:
    """Flower's `evaluate_fn`: accuracy and loss of a global model on the held-out images."""
    images, labels = data.held_out()
    model_factory = demo.model_factory()

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        model = model_factory()
        model.load_state_dict(arrays.to_torch_state_dict())
        model.eval()
        with torch.no_grad():
            logits = torch.cat([model(part) for part in images.split(EVAL_BATCH)])
        accuracy = (logits.argmax(dim=1) == labels).double().mean().item()
        loss = F.cross_entropy(logits, labels).item()
        return MetricRecord({"accuracy": accuracy, "loss": loss, "images": len(labels)})

    return evaluate


def read_summary(out: Path) -> list[dict[str, str]]:
    """The rows of the server's flower-summary.csv."""
    with (out / SUMMARY).open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _number(text: str | None) -> float | None:
    return None if text in (None, "") else float(text)  # type: ignore[arg-type]


def _cell(value: float | None, form: str = "{:.2f}") -> str:
    return "–" if value is None or math.isnan(value) else form.format(value)


def _client(row: Mapping[str, str]) -> int:
    return int(float(row["reply_partition-id"]))


def psnr_table(rows: Sequence[Mapping[str, str]], guarded: bool) -> str:
    """PSNR of the server's reconstruction by round and client (the attacked ones), as a
    Markdown table."""
    head = ["round", "client", "server PSNR dB", "SSIM", "labels rec./true", "attack s"]
    if guarded:
        head += ["guard: PSNR as trained", "defended", "guard: PSNR sent"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    attacked = [r for r in rows if r["attacked"] == "True"]
    for row in sorted(attacked, key=lambda r: (int(r["round"]), _client(r))):
        cells = [
            row["round"],
            str(_client(row)),
            _cell(_number(row["psnr"])) if row["status"] == "ok" else row["status"],
            _cell(_number(row["ssim"]), "{:.3f}"),
            f"{row['recovered_labels'] or '–'} / {row['true_labels'] or '–'}",
            _cell(_number(row["seconds"]), "{:.1f}"),
        ]
        if guarded:
            cells += [
                _cell(_number(row.get("reply_gradleak-psnr"))),
                "yes" if _number(row.get("reply_gradleak-defended")) else "no",
                _cell(_number(row.get("reply_gradleak-psnr-sent"))),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def guard_line(rows: Sequence[Mapping[str, str]], threshold: float) -> str:
    """What the guard did over every captured update (attacked by the server or not)."""
    defended = sum(1 for r in rows if _number(r.get("reply_gradleak-defended")))
    failed = sum(1 for r in rows if _number(r.get("reply_gradleak-guard-failed")))
    sent = sorted(
        v
        for r in rows
        if (v := _number(r.get("reply_gradleak-psnr-sent"))) is not None and not math.isnan(v)
    )
    line = f"guard: {defended} of {len(rows)} updates defended ({failed} because the check failed)"
    if sent:
        above = sum(1 for v in sent if v >= threshold)
        line += (
            f"; its own attack on what was sent: median {sent[len(sent) // 2]:.2f} dB, "
            f"max {sent[-1]:.2f} dB, {above} of {len(sent)} still at or above {threshold:g} dB"
        )
    return line


def client_means(rows: Sequence[Mapping[str, str]]) -> dict[int, float]:
    """Mean server PSNR per client over the attacked rounds."""
    scores: dict[int, list[float]] = {}
    for row in rows:
        value = _number(row["psnr"])
        if value is not None:
            scores.setdefault(_client(row), []).append(value)
    return {client: sum(v) / len(v) for client, v in sorted(scores.items())}


def accuracy_line(evaluations: Mapping[int, Mapping[str, float]], last_rounds: int = 10) -> str:
    """The held-out accuracy before training, after the last round and over the last
    rounds (one round's figure jumps by several points when clients take single steps)."""
    first, last = min(evaluations), max(evaluations)
    images = int(evaluations[last]["images"])
    tail = [evaluations[r]["accuracy"] for r in sorted(evaluations)[1:][-last_rounds:]]
    line = (
        f"held-out accuracy ({images} images): {100 * evaluations[first]['accuracy']:.1f}% "
        f"before training, {100 * evaluations[last]['accuracy']:.1f}% after round {last}"
    )
    if len(tail) > 1:
        line += f", {100 * sum(tail) / len(tail):.1f}% mean of the last {len(tail)} rounds"
    return line
