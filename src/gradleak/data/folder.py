"""Image folders laid out as one sub-folder per class, loaded lazily."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from torch import Tensor

from gradleak.core.errors import GradleakError
from gradleak.data.image import (
    IMAGE_SUFFIXES,
    check_size_and_channels,
    is_image_file,
    load_image,
)
from gradleak.data.source import check_index


class FolderImageSource:
    """Labelled image files decoded on access; classes are the sorted sub-folder names."""

    def __init__(
        self,
        samples: Sequence[tuple[Path, int]],
        class_names: Sequence[str],
        size: tuple[int, int],
        channels: int,
    ) -> None:
        self.samples: tuple[tuple[Path, int], ...] = tuple((Path(p), int(y)) for p, y in samples)
        self.class_names: tuple[str, ...] = tuple(class_names)
        self.size = check_size_and_channels(size, channels)
        self.channels = channels
        bad = [y for _, y in self.samples if not 0 <= y < len(self.class_names)]
        if bad:
            raise GradleakError(
                f"labels {sorted(set(bad))} lie outside 0..{len(self.class_names) - 1}; "
                "give one class name per label"
            )

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        path, label = self.samples[check_index(i, len(self))]
        return load_image(path, self.size, self.channels), label

    def __repr__(self) -> str:
        return (
            f"FolderImageSource({len(self)} images, {self.channels}×{self.size[0]}×"
            f"{self.size[1]}, {len(self.class_names)} classes)"
        )


def _visible(path: Path, root: Path) -> bool:
    # Hidden entries (.DS_Store, ._x.jpg resource forks, .git) are never images.
    return not any(part.startswith(".") for part in path.relative_to(root).parts)


def _images_under(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and is_image_file(p) and _visible(p, folder)
    )


def load_image_folder(root: Path, size: tuple[int, int], channels: int) -> FolderImageSource:
    """Index `root/<class>/**/<image>`; sub-folders without images are not classes."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise GradleakError(
            f"image folder {root} does not exist or is not a folder; "
            "pass a folder with one sub-folder of images per class"
        )
    classes: list[tuple[str, list[Path]]] = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and _visible(p, root)):
        files = _images_under(sub)
        if files:
            classes.append((sub.name, files))
    if not classes:
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        raise GradleakError(
            f"no class sub-folders with images in {root}; expected {root}/<class>/<image> "
            f"with suffixes {suffixes}"
        )
    samples = [(path, label) for label, (_, files) in enumerate(classes) for path in files]
    return FolderImageSource(samples, [name for name, _ in classes], size, channels)
