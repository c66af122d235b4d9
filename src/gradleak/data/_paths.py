"""Locating dataset folders under a data root and reporting missing files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from gradleak.core.errors import GradleakError


def resolve_dataset_dir(root: Path | str, folder_name: str, expected: Sequence[str] = ()) -> Path:
    """Return `root/folder_name` if it exists, else `root` itself (the dataset folder)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        files = f" (with {', '.join(expected)})" if expected else ""
        raise GradleakError(
            f"data folder {root} does not exist or is not a folder; "
            f"pass the folder that holds {folder_name}/{files} or that folder itself"
        )
    nested = root / folder_name
    return nested if nested.is_dir() else root


def missing_files_error(
    folder: Path, missing: Sequence[str], expected: Sequence[str], what: str, fix: str
) -> GradleakError:
    """An error naming the folder, the files that are missing and all the expected ones."""
    return GradleakError(
        f"{what} not found in {folder}: missing {', '.join(missing)} "
        f"(expected {', '.join(expected)}); {fix}"
    )
