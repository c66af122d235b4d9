"""CIFAR-10 and CIFAR-100 from the official python pickle batches."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gradleak.core.errors import GradleakError
from gradleak.data._paths import missing_files_error, resolve_dataset_dir
from gradleak.data._pickle import read_pickle_dict
from gradleak.data.source import ArrayImageSource

_SIDE = 32
_ROW_BYTES = 3 * _SIDE * _SIDE


@dataclass(frozen=True)
class _Layout:
    """Where one CIFAR variant keeps its splits, labels and class names."""

    title: str
    folder: str
    archive: str
    splits: dict[str, tuple[str, ...]]
    meta_file: str


_CIFAR10 = _Layout(
    title="CIFAR-10",
    folder="cifar-10-batches-py",
    archive="cifar-10-python.tar.gz",
    splits={"test": ("test_batch",), "train": tuple(f"data_batch_{i}" for i in range(1, 6))},
    meta_file="batches.meta",
)
_CIFAR100 = _Layout(
    title="CIFAR-100",
    folder="cifar-100-python",
    archive="cifar-100-python.tar.gz",
    splits={"test": ("test",), "train": ("train",)},
    meta_file="meta",
)
# CIFAR-100 label kind -> (label key in a batch, names key in meta, number of classes)
_CIFAR100_LABELS = {
    "fine": (b"fine_labels", b"fine_label_names", 100),
    "coarse": (b"coarse_labels", b"coarse_label_names", 20),
}


def _split_files(layout: _Layout, root: Path, split: str) -> tuple[Path, list[Path]]:
    if split not in layout.splits:
        raise GradleakError(
            f"unknown {layout.title} split {split!r}; choose one of {', '.join(layout.splits)}"
        )
    expected = layout.splits[split]
    folder = resolve_dataset_dir(root, layout.folder, expected)
    missing = [name for name in expected if not (folder / name).is_file()]
    if missing:
        raise missing_files_error(
            folder,
            missing,
            expected,
            f"{layout.title} {split} split",
            f"extract the official {layout.archive} so that {layout.folder}/ holds them",
        )
    return folder, [folder / name for name in expected]


def _read_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    batch = read_pickle_dict(path)
    data, labels = batch.get(b"data"), batch.get(label_key)
    if data is None or labels is None:
        raise GradleakError(
            f"{path} lacks the keys b'data' and {label_key!r} of a CIFAR batch; "
            "replace it with the file from the official python archive"
        )
    data = np.asarray(data)
    labels = np.asarray(labels)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _ROW_BYTES:
        raise GradleakError(
            f"{path}: b'data' is {data.dtype} {data.shape}, expected uint8 [N, {_ROW_BYTES}]; "
            "replace it with the file from the official python archive"
        )
    if labels.shape != (data.shape[0],):
        raise GradleakError(
            f"{path}: {label_key!r} has {labels.size} entries for {data.shape[0]} images; "
            "replace it with the file from the official python archive"
        )
    return data, labels.astype(np.int64)


def _class_names(path: Path, names_key: bytes, num_classes: int) -> tuple[str, ...]:
    if not path.is_file():
        # Names are cosmetic; images and labels are still right without them.
        return tuple(str(i) for i in range(num_classes))
    names = read_pickle_dict(path).get(names_key)
    if not isinstance(names, list) or len(names) != num_classes:
        raise GradleakError(
            f"{path}: {names_key!r} should list {num_classes} class names; "
            "replace it with the file from the official python archive or delete it"
        )
    return tuple(n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names)


def _load(
    layout: _Layout,
    root: Path,
    split: str,
    label_key: bytes,
    names_key: bytes,
    num_classes: int,
) -> ArrayImageSource:
    folder, files = _split_files(layout, root, split)
    parts = [_read_batch(path, label_key) for path in files]
    data = np.concatenate([d for d, _ in parts])
    labels = np.concatenate([y for _, y in parts])
    # Each row is the red plane, then green, then blue, each 32×32 in row-major order,
    # which is exactly C×H×W.
    images = torch.from_numpy(data.reshape(-1, 3, _SIDE, _SIDE))
    names = _class_names(folder / layout.meta_file, names_key, num_classes)
    return ArrayImageSource(images, torch.from_numpy(labels), names)


def load_cifar10(root: Path, split: str = "test") -> ArrayImageSource:
    """Load CIFAR-10 from `cifar-10-batches-py/` (root may be that folder or its parent)."""
    return _load(_CIFAR10, root, split, b"labels", b"label_names", 10)


def load_cifar100(root: Path, split: str = "test", label: str = "fine") -> ArrayImageSource:
    """Load CIFAR-100 with fine (100) or coarse (20) labels from `cifar-100-python/`."""
    if label not in _CIFAR100_LABELS:
        raise GradleakError(
            f"unknown CIFAR-100 label kind {label!r}; choose one of {', '.join(_CIFAR100_LABELS)}"
        )
    label_key, names_key, num_classes = _CIFAR100_LABELS[label]
    return _load(_CIFAR100, root, split, label_key, names_key, num_classes)
