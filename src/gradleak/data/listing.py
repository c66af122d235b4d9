"""Image lists: a CSV or JSON file naming each image file and its label, loaded lazily.

CSV: one `path,label` row per image (a first row `path,label` is a header and skipped;
blank lines are ignored; a path holding a comma is quoted, "a,b.png"). JSON: a list of
`{"path": ..., "label": ...}` objects or of `[path, label]` pairs. Relative paths are
relative to the list file's folder. Labels are class indices 0..K-1 (the classes are then
"0".."K-1", K the largest label plus one) or class names (the classes are then the sorted
distinct names); a list mixing the two is refused. In a CSV file a label that is a whole
number is an index. The images are decoded when read, like an image folder's.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from gradleak.core.errors import GradleakError
from gradleak.data.folder import FolderImageSource

LIST_SUFFIXES = (".csv", ".json")
_HEADER = ["path", "label"]
_INDEX = re.compile(r"[+-]?\d+")

# One entry as read: where it stands in the file (for messages), its path and its label.
_Entry = tuple[str, str, int | str]


def _read_text(path: Path) -> str:
    if path.is_dir():
        raise GradleakError(f"image list {path} is a folder; pass a .csv or .json list file")
    try:
        # utf-8-sig: spreadsheets write a byte-order mark before the first row.
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError as e:
        raise GradleakError(f"image list {path} does not exist; check the path") from e
    except PermissionError as e:
        raise GradleakError(f"image list {path} cannot be read (permission denied)") from e
    except UnicodeDecodeError as e:
        raise GradleakError(f"image list {path} is not UTF-8 text; save it as UTF-8") from e


def _csv_entries(path: Path, text: str) -> list[_Entry]:
    entries: list[_Entry] = []
    rows = csv.reader(text.splitlines())
    for line, row in enumerate(rows, start=1):
        fields = [f.strip() for f in row]
        if not any(fields):
            continue
        if not entries and [f.lower() for f in fields] == _HEADER:
            continue
        if len(fields) != 2 or not fields[0] or not fields[1]:
            raise GradleakError(
                f"image list {path} line {line}: expected 'path,label', got {','.join(row)!r}; "
                "quote paths that hold commas"
            )
        label: int | str = int(fields[1]) if _INDEX.fullmatch(fields[1]) else fields[1]
        entries.append((f"line {line}", fields[0], label))
    return entries


def _json_entry(path: Path, i: int, item: object) -> _Entry:
    where = f"entry {i}"
    if isinstance(item, dict) and set(item) == set(_HEADER):
        value, label = item["path"], item["label"]
    elif isinstance(item, list) and len(item) == 2:
        value, label = item
    else:
        raise GradleakError(
            f'image list {path} {where}: expected {{"path": ..., "label": ...}} or '
            f"[path, label], got {json.dumps(item)[:80]}"
        )
    # bool is an int to Python, but `true` is never a class.
    if not isinstance(value, str) or not value or isinstance(label, bool):
        raise GradleakError(
            f"image list {path} {where}: the path must be a string and the label an integer "
            "or a class name"
        )
    if not isinstance(label, int | str) or label == "":
        raise GradleakError(
            f"image list {path} {where}: label {json.dumps(label)} is neither an integer nor "
            "a class name"
        )
    return where, value, label


def _json_entries(path: Path, text: str) -> list[_Entry]:
    try:
        items = json.loads(text)
    except json.JSONDecodeError as e:
        raise GradleakError(f"image list {path} is not valid JSON ({e}); fix the file") from e
    if not isinstance(items, list):
        raise GradleakError(
            f"image list {path} holds a JSON {type(items).__name__}; give a list of "
            '{"path": ..., "label": ...} objects or [path, label] pairs'
        )
    return [_json_entry(path, i, item) for i, item in enumerate(items)]


_READERS: dict[str, Callable[[Path, str], list[_Entry]]] = {
    ".csv": _csv_entries,
    ".json": _json_entries,
}


def _classes(path: Path, labels: Sequence[int | str]) -> tuple[list[int], tuple[str, ...]]:
    """Class indices for `labels` and the class names, from indices or from names."""
    names = sorted({y for y in labels if isinstance(y, str)})
    if names and any(isinstance(y, int) for y in labels):
        raise GradleakError(
            f"image list {path} mixes class indices and class names as labels; give all "
            "labels as indices 0..K-1 or all as names"
        )
    if names:
        index = {name: i for i, name in enumerate(names)}
        return [index[str(y)] for y in labels], tuple(names)
    indices = [int(y) for y in labels]
    if min(indices) < 0:
        raise GradleakError(
            f"image list {path} has the negative label {min(indices)}; labels are class "
            "indices 0..K-1 or class names"
        )
    return indices, tuple(str(i) for i in range(max(indices) + 1))


def read_image_list(path: Path) -> tuple[list[tuple[Path, int]], tuple[str, ...]]:
    """The images a list file names, with class indices, and the class names.

    Args:
        path: a .csv or .json list (see the module's docstring).

    Returns:
        (image path, class index) per entry in the file's order, and the class names.

    Raises:
        GradleakError: a missing or unreadable list, another suffix, a malformed entry,
            no entries, labels that mix indices and names or are negative, or an image
            file that does not exist (one line naming the entry).
    """
    path = Path(path).expanduser()
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise GradleakError(
            f"image list {path} must be a {' or '.join(LIST_SUFFIXES)} file; "
            "a folder of class sub-folders is --dataset folder"
        )
    entries = reader(path, _read_text(path))
    if not entries:
        raise GradleakError(f"image list {path} names no images; add path,label rows")
    labels, names = _classes(path, [label for _, _, label in entries])
    samples: list[tuple[Path, int]] = []
    for (where, value, _), label in zip(entries, labels, strict=True):
        image = path.parent / Path(value).expanduser()
        # Checked now rather than when the image is read, which may be deep into a run.
        if not image.is_file():
            raise GradleakError(
                f"image list {path} {where}: image file {image} does not exist; paths are "
                "relative to the list's folder"
            )
        samples.append((image, label))
    return samples, names


def load_image_list(path: Path, size: tuple[int, int], channels: int) -> FolderImageSource:
    """The images a list file names, decoded on access like an image folder's.

    Args:
        path: a .csv or .json list (see the module's docstring).
        size: (height, width) every image is resized and centre-cropped to.
        channels: 1 (grey) or 3 (RGB).

    Returns:
        The images, in the list's order, with the list's classes.

    Raises:
        GradleakError: a bad list (see `read_image_list`), size or channel count.
    """
    samples, names = read_image_list(path)
    return FolderImageSource(samples, names, size, channels)
