"""MNIST from the official idx files, gzipped or not."""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from gradleak.core.errors import GradleakError
from gradleak.data._paths import missing_files_error, resolve_dataset_dir
from gradleak.data.source import ArrayImageSource

_FOLDER = "mnist"
_SPLIT_PREFIX = {"test": "t10k", "train": "train"}
# The magic number is 0x0000 TT DD: TT=0x08 (unsigned bytes), DD = number of dimensions.
_IMAGES_MAGIC = 2051
_LABELS_MAGIC = 2049


def _find(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise GradleakError(
            f"{path} is not a valid gzip file ({e}); download the official file again"
        ) from e
    except OSError as e:
        raise GradleakError(f"could not read {path}: {e.strerror or e}") from e


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Read an unsigned-byte idx file whose header must carry `magic`."""
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise GradleakError(f"{path} is too short to be an idx file; download it again")
    (found,) = struct.unpack(">I", raw[:4])
    if found != magic:
        raise GradleakError(
            f"{path} has idx magic number {found}, expected {magic}; "
            "check that images and labels files are not swapped or corrupt"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise GradleakError(f"{path} ends inside its idx header; download it again")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(dims))
    if len(raw) - header != expected:
        raise GradleakError(
            f"{path} holds {len(raw) - header} data bytes but its header {dims} "
            f"promises {expected}; download it again"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def load_mnist(root: Path, split: str = "test") -> ArrayImageSource:
    """Load MNIST 1×28×28 digits from `mnist/` (root may be that folder or its parent)."""
    if split not in _SPLIT_PREFIX:
        raise GradleakError(
            f"unknown MNIST split {split!r}; choose one of {', '.join(_SPLIT_PREFIX)}"
        )
    prefix = _SPLIT_PREFIX[split]
    names = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    folder = resolve_dataset_dir(root, _FOLDER, [f"{n}[.gz]" for n in names])
    images_path, labels_path = (_find(folder, name) for name in names)
    if images_path is None or labels_path is None:
        missing = [
            f"{n}[.gz]" for n, p in zip(names, (images_path, labels_path), strict=True) if p is None
        ]
        raise missing_files_error(
            folder,
            missing,
            [f"{name}[.gz]" for name in names],
            f"MNIST {split} split",
            f"put the official idx files in {_FOLDER}/",
        )
    images = read_idx(images_path, _IMAGES_MAGIC)
    labels = read_idx(labels_path, _LABELS_MAGIC)
    if images.shape[0] != labels.shape[0]:
        raise GradleakError(
            f"{images_path} has {images.shape[0]} images but {labels_path} has "
            f"{labels.shape[0]} labels; use files from the same split"
        )
    if labels.size and labels.max() > 9:
        raise GradleakError(f"{labels_path} has label {labels.max()} outside 0..9")
    # frombuffer arrays are read-only; copy so torch owns writable memory.
    pixels = torch.from_numpy(images.copy()).unsqueeze(1)
    targets = torch.from_numpy(labels.astype(np.int64))
    return ArrayImageSource(pixels, targets, tuple(str(d) for d in range(10)))
