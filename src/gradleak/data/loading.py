"""Opening a dataset by name: its images, normalisation statistics, classes and description.

`open_images` is the one way runs, training and studies read images. What it returns knows
the statistics the images are normalised with (the dataset's own, or the usual photo
statistics for an image folder), the shape of its images, its class names and a description
for outputs, and it picks images by index with one-line errors naming the dataset.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from gradleak.core.errors import GradleakError
from gradleak.data.bundled import load_bundled_cifar10
from gradleak.data.cifar import load_cifar10, load_cifar100
from gradleak.data.datasets import DatasetSpec, get_dataset_spec
from gradleak.data.folder import load_image_folder
from gradleak.data.image import MAX_IMAGE_SIZE
from gradleak.data.mnist import load_mnist
from gradleak.data.normalize import normalize
from gradleak.data.source import ImageSource, stack

FOLDER = "folder"  # the dataset name of an image folder (one sub-folder per class)
# Normalisation of images that come from a folder or a single file: the usual photo statistics.
PHOTO_STATS = get_dataset_spec("imagenet")
FOLDER_IMAGE_SIZE = 32  # side of folder images (and of a single --image), unless --image-size
FOLDER_IMAGE_CLASSES = 10  # classes of the model for a single --image with --dataset folder
FOLDER_CHANNELS = 3  # folder images are read as RGB
BUNDLED_DESCRIPTION = "bundled CIFAR-10 test images"

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
    return load_image_folder(_require_root(FOLDER, root), size, channels)


_LOADERS: dict[str, _Loader] = {
    "cifar10": _array_loader("cifar10", load_cifar10),
    "cifar100": _array_loader("cifar100", load_cifar100),
    "mnist": _array_loader("mnist", load_mnist),
    FOLDER: _folder_loader,
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


def dataset_stats(dataset: str) -> DatasetSpec:
    """The statistics `dataset`'s images are normalised with.

    Args:
        dataset: a dataset name, or 'folder' for an image folder.

    Returns:
        The dataset's own spec, or `PHOTO_STATS` for an image folder (of which only the
        name, mean and std apply: a folder has its own classes and image size).

    Raises:
        GradleakError: if the name is not a known dataset.
    """
    return PHOTO_STATS if dataset == FOLDER else get_dataset_spec(dataset)


def input_shape(dataset: str, image_size: int | None = None) -> tuple[int, tuple[int, int]]:
    """Channels and (height, width) of the images `open_images` returns for `dataset`.

    Args:
        dataset: a dataset name, or 'folder' for an image folder.
        image_size: side of folder images (default `FOLDER_IMAGE_SIZE`); for another
            dataset None or its own fixed side.

    Returns:
        The channel count and the image size (H, W).

    Raises:
        GradleakError: if the name is unknown, another size is asked of a fixed-size
            dataset, or a folder's size lies outside 1..`MAX_IMAGE_SIZE`.
    """
    if dataset == FOLDER:
        side = image_size or FOLDER_IMAGE_SIZE
        if not 1 <= side <= MAX_IMAGE_SIZE:
            raise GradleakError(
                f"--image-size must be in 1..{MAX_IMAGE_SIZE}, got {side}; larger images do "
                "not fit in memory during an attack"
            )
        return FOLDER_CHANNELS, (side, side)
    spec = get_dataset_spec(dataset)
    if image_size not in (None, spec.image_size[0]):
        raise GradleakError(
            f"{spec.name} images are {spec.image_size[0]} pixels; drop --image-size or use "
            "--dataset folder"
        )
    return spec.channels, spec.image_size


@dataclass(frozen=True)
class LoadedImages:
    """An opened dataset: its images, their normalisation and how outputs name them.

    Args:
        source: the images, float32 C×H×W in [0, 1], and their labels.
        stats: the normalisation statistics (see `dataset_stats`).
        channels: channels of every image.
        size: (height, width) of every image.
        description: how outputs name the images, e.g. "cifar10 test split".
    """

    source: ImageSource
    stats: DatasetSpec
    channels: int
    size: tuple[int, int]
    description: str

    def __len__(self) -> int:
        return len(self.source)

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.source.class_names)

    @property
    def num_classes(self) -> int:
        return len(self.source.class_names)

    def pixels(self, indices: Sequence[int]) -> tuple[Tensor, Tensor]:
        """Images at `indices` in [0, 1], B×C×H×W float32, and their int64 labels.

        Raises:
            GradleakError: if no index is given or one lies outside the dataset.
        """
        size = len(self.source)
        outside = [i for i in indices if not 0 <= i < size]
        if outside:
            raise GradleakError(
                f"image index {max(outside)} is out of range: {self.description} has {size} "
                f"images (0..{size - 1})"
            )
        return stack(self.source, indices)

    def normalized(self, indices: Sequence[int]) -> tuple[Tensor, Tensor]:
        """Images at `indices` normalised with `stats` (the models' input), and their labels.

        Raises:
            GradleakError: if no index is given or one lies outside the dataset.
        """
        images, labels = self.pixels(indices)
        return normalize(images, self.stats.mean, self.stats.std), labels

    def describe(self, indices: Sequence[int]) -> str:
        """The description followed by the chosen indices, e.g. "mnist test split, indices 0, 1"."""
        return f"{self.description}, indices {', '.join(str(i) for i in indices)}"


def open_images(
    dataset: str, data_root: Path | None, split: str = "test", image_size: int | None = None
) -> LoadedImages:
    """Open a dataset's split for reading images by index.

    Args:
        dataset: cifar10, cifar100, mnist, or 'folder' (one sub-folder of images per class).
        data_root: the folder holding the dataset. None with cifar10's test split: the
            CIFAR-10 test images bundled with gradleak (indices 0..7).
        split: 'test' or 'train' (image folders have only 'test').
        image_size: side folder images are resized and centre-cropped to (default
            `FOLDER_IMAGE_SIZE`); other datasets keep their fixed size.

    Returns:
        The opened images with their statistics, shape, class names and description.

    Raises:
        GradleakError: if the dataset is unknown, its files are missing or unreadable, or
            the image size cannot be honoured.
    """
    channels, size = input_shape(dataset, image_size)
    stats = dataset_stats(dataset)
    if dataset == FOLDER:
        source = load_dataset(FOLDER, data_root, split, size=size, channels=channels)
        return LoadedImages(source, stats, channels, size, f"folder {data_root}")
    if data_root is None and stats.name == "cifar10" and split == "test":
        # Enough for a smoke run or a single attack with no download.
        return LoadedImages(load_bundled_cifar10(), stats, channels, size, BUNDLED_DESCRIPTION)
    source = load_dataset(dataset, data_root, split)
    return LoadedImages(source, stats, channels, size, f"{stats.name} {split} split")
