"""Result tables: CSV files with fixed columns, and how each score is shown in tables and
reports."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradleak.core.files import replaced_atomically


def write_csv(path: Path, columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> None:
    """One line per row, only `columns`, in their order; None or missing → empty cell.

    The file is replaced whole: a reader sees the old table or the new one.
    """
    with (
        replaced_atomically(Path(path)) as partial,
        partial.open("w", newline="", encoding="utf-8") as handle,
    ):
        writer = csv.DictWriter(handle, fieldnames=list(columns))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in columns})


@dataclass(frozen=True)
class ScoreFormat:
    """How one score is shown.

    Attributes:
        label: its name in reports ("PSNR").
        column: its header in markdown tables ("PSNR (dB)").
        spec: the format of one value in reports (".2f").
        brief: the format of a value in markdown tables, e.g. of a mean ± std (".2f").
        unit: the unit after a value in reports ("dB"), or "".
    """

    label: str
    column: str
    spec: str
    brief: str
    unit: str = ""


# Every score a modality reports (`Modality.scores`), by its name in metrics.json.
SCORE_FORMATS: dict[str, ScoreFormat] = {
    "psnr": ScoreFormat("PSNR", "PSNR (dB)", ".2f", ".2f", "dB"),
    "ssim": ScoreFormat("SSIM", "SSIM", ".4f", ".3f"),
    "mse": ScoreFormat("MSE", "MSE", ".3g", ".3g"),
    "label_accuracy": ScoreFormat("label accuracy", "label acc.", ".2f", ".2f"),
    "exact_fraction": ScoreFormat("fraction exact", "exact (≥60 dB)", ".2f", ".2f"),
    "exact_match": ScoreFormat("exact match", "exact match", ".2f", ".2f"),
    "token_accuracy": ScoreFormat("token accuracy", "token acc.", ".3f", ".3f"),
    "token_recall": ScoreFormat("token recall", "token recall", ".3f", ".3f"),
    "token_precision": ScoreFormat("token precision", "token prec.", ".3f", ".3f"),
    "rouge1": ScoreFormat("ROUGE-1", "ROUGE-1", ".3f", ".3f"),
    "rouge2": ScoreFormat("ROUGE-2", "ROUGE-2", ".3f", ".3f"),
    "rougeL": ScoreFormat("ROUGE-L", "ROUGE-L", ".3f", ".3f"),
}


def score_format(score: str) -> ScoreFormat:
    """How `score` is shown; a score not in `SCORE_FORMATS` by its name, to 4 digits."""
    known = SCORE_FORMATS.get(score)
    if known is not None:
        return known
    name = score.replace("_", " ")
    return ScoreFormat(name, name, ".4g", ".4g")


def brief(value: float | None, score: str) -> str:
    """A value of `score` for a markdown table; "n/a" for None."""
    return "n/a" if value is None else format(value, score_format(score).brief)


def brief_spread(mean: float | None, std: float | None, score: str) -> str:
    """'mean ± std' of `score` for a markdown table; "n/a" when there is no mean."""
    if mean is None:
        return "n/a"
    if std is None:
        return brief(mean, score)
    return f"{brief(mean, score)} ± {brief(std, score)}"
