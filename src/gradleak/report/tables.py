"""Result tables as CSV: fixed columns, None and missing values as empty cells."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
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
