"""Per-iteration attack history (matching loss, PSNR, …) as CSV."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

from gradleak.core.errors import GradleakError
from gradleak.core.files import replaced_atomically


def write_history_csv(rows: Sequence[Mapping[str, float | int | None]], path: Path) -> None:
    """Write one line per row; columns are all keys in first-seen order, None/missing as empty."""
    columns: dict[str, None] = {}  # an ordered set
    for row in rows:
        if not isinstance(row, Mapping):
            raise GradleakError(
                f"history rows must be mappings of column name to number, got "
                f"{type(row).__name__}; pass a list of dicts"
            )
        columns.update(dict.fromkeys(row))
    with (
        replaced_atomically(Path(path)) as partial,
        partial.open("w", newline="", encoding="utf-8") as handle,
    ):
        if not columns:
            return  # no rows: an empty file rather than a blank header line
        writer = csv.DictWriter(handle, fieldnames=list(columns), restval="")
        writer.writeheader()
        for row in rows:
            writer.writerow({key: "" if value is None else value for key, value in row.items()})
