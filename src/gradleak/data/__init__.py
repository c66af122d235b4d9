"""Loaders for real image data: CIFAR pickles, MNIST idx, image folders, bundled samples."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from gradleak.core.errors import GradleakError
from gradleak.data.bundled import load_bundled_cifar10
from gradleak.data.cifar import load_cifar10, load_cifar100
from gradleak.data.datasets import DATASETS, DatasetSpec, get_dataset_spec
from gradleak.data.folder import FolderImageSource, load_image_folder
from gradleak.data.image import IMAGE_SUFFIXES, is_image_file, load_image
from gradleak.data.mnist import load_mnist
from gradleak.data.normalize import denormalize, normalize, pixel_bounds
from gradleak.data.source import ArrayImageSource, ImageSource, stack

__all__ = [
    "DATASETS",
    "IMAGE_SUFFIXES",
    "ArrayImageSource",
    "DatasetSpec",
    "FolderImageSource",
    "ImageSource",
    "denormalize",
    "get_dataset_spec",
    "is_image_file",
    "load_bundled_cifar10",
    "load_cifar10",
    "load_cifar100",
    "load_dataset",
    "load_image",
    "load_image_folder",
    "load_mnist",
    "normalize",
    "pixel_bounds",
    "stack",
]

_Loader = Callable[[Path | None, str, tuple[int, int] | None, int | None], ImageSource]


def _require_root(name: str, root: Path | None) -> Path:
    if root is None:
        raise GradleakError(f"dataset {name!r} is read from disk: --data-root DIR is required")
    return Path(root)


def _array_loader(name: str, load: Callable[[Path, str], ImageSource]) -> _Loader:
    """Wrap a fixed-shape loader; a size or channel count it cannot honour is an error."""
    spec = get_dataset_spec(name)

    def loader(
        root: Path | None, split: str, size: tuple[int, int] | None, channels: int | None
    ) -> ImageSource:
        if size is not None and tuple(size) != spec.image_size:
            raise GradleakError(
                f"{name} images are {spec.image_size[0]}×{spec.image_size[1]} and are not "
                f"resized; drop the size {tuple(size)} or use the 'folder' dataset"
            )
        if channels is not None and channels != spec.channels:
            raise GradleakError(
                f"{name} images have {spec.channels} channel(s); drop channels={channels}"
            )
        return load(_require_root(name, root), split)

    return loader


def _folder_loader(
    root: Path | None, split: str, size: tuple[int, int] | None, channels: int | None
) -> ImageSource:
    if size is None or channels is None:
        raise GradleakError(
            "the 'folder' dataset needs an image size (H, W) and a channel count (1 or 3)"
        )
    if split != "test":
        # An image folder is one set of images; which split it is is the user's choice of folder.
        raise GradleakError(
            f"image folders have no splits (got {split!r}); point the data root at the folder "
            "to load instead"
        )
    return load_image_folder(_require_root("folder", root), size, channels)


_LOADERS: dict[str, _Loader] = {
    "cifar10": _array_loader("cifar10", load_cifar10),
    "cifar100": _array_loader("cifar100", load_cifar100),
    "mnist": _array_loader("mnist", load_mnist),
    "folder": _folder_loader,
}


def load_dataset(
    name: str,
    root: Path | None,
    split: str = "test",
    *,
    size: tuple[int, int] | None = None,
    channels: int | None = None,
) -> ImageSource:
    """Load a dataset by name: cifar10, cifar100, mnist, or an image folder ('folder')."""
    loader = _LOADERS.get(name.lower())
    if loader is None:
        raise GradleakError(f"unknown dataset {name!r}; choose one of {', '.join(_LOADERS)}")
    return loader(root, split, size, channels)
