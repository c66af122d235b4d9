"""Opening a dataset by name: its images, normalisation statistics, classes and description.

`open_images` is the one way runs, training and studies read images. What it returns knows
the statistics the images are normalised with (the dataset's own, or the usual photo
statistics for an image folder), the shape of its images, its class names and a description
for outputs, and it picks images by index with one-line errors naming the dataset.

Besides the standard datasets, users give their own images in one of three forms, all
resized to any requested side (`FILE_DATASETS`): an image folder (one sub-folder per
class), an image list (`gradleak.data.listing`: a CSV or JSON file of path and label) and a
tensor file (`gradleak.data.tensors`: images and labels in a .npz or .pt). A run reads
them as RGB (`FOLDER_CHANNELS`) unless asked for `channels=1`; `normalize` replaces the
default statistics (`gradleak.data.statistics`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from torch import Tensor

from gradleak.core.errors import GradleakError
from gradleak.data.bundled import load_bundled_cifar10
from gradleak.data.cifar import load_cifar10, load_cifar100
from gradleak.data.datasets import DatasetSpec, get_dataset_spec
from gradleak.data.folder import load_image_folder
from gradleak.data.image import MAX_IMAGE_SIZE
from gradleak.data.listing import LIST_SUFFIXES, load_image_list
from gradleak.data.mnist import load_mnist
from gradleak.data.normalize import normalize
from gradleak.data.source import ImageSource, stack
from gradleak.data.statistics import Normalization, image_statistics, normalization
from gradleak.data.tensors import TENSOR_SUFFIXES, load_tensor_file

FOLDER = "folder"  # the dataset name of an image folder (one sub-folder per class)
LIST = "list"  # a CSV or JSON list of image paths and labels (the data root is the file)
TENSORS = "tensors"  # a .npz or .pt file of images and labels (the data root is the file)
# The user's own images: any size (resized to the requested side), the photo statistics.
FILE_DATASETS = (FOLDER, LIST, TENSORS)
# How messages name the user's images, by dataset.
_FILE_KINDS = {FOLDER: "image folders", LIST: "image lists", TENSORS: "tensor files"}
# Normalisation of images that come from a folder or a single file: the usual photo statistics.
PHOTO_STATS = get_dataset_spec("imagenet")
FOLDER_IMAGE_SIZE = 32  # side of folder images (and of a single --image), unless --image-size
FOLDER_IMAGE_CLASSES = 10  # classes of the model for a single --image with --dataset folder
FOLDER_CHANNELS = 3  # folder images are read as RGB
# Grey images of a file dataset (channels=1): the photo statistics averaged over channels.
PHOTO_GREY_STATS = replace(
    PHOTO_STATS,
    name=f"{PHOTO_STATS.name}-grey",
    channels=1,
    mean=(round(sum(PHOTO_STATS.mean) / 3, 4),),
    std=(round(sum(PHOTO_STATS.std) / 3, 4),),
)
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


def _file_loader(name: str, load: Callable[[Path, tuple[int, int], int], ImageSource]) -> _Loader:
    """Wrap a loader of the user's images, which are resized to any size."""

    def loader(
        root: Path | None, split: str, size: tuple[int, int] | None, channels: int | None
    ) -> ImageSource:
        if size is None or channels is None:
            raise GradleakError(
                f"the {name!r} dataset needs an image size (H, W) and a channel count (1 or 3)"
            )
        if split != "test":
            # The user's images are one set; which split they are is the user's choice of files.
            raise GradleakError(
                f"{_FILE_KINDS[name]} have no splits (got {split!r}); point the data root at "
                "the images to load instead"
            )
        return load(_require_root(name, root), size, channels)

    return loader


_LOADERS: dict[str, _Loader] = {
    "cifar10": _array_loader("cifar10", load_cifar10),
    "cifar100": _array_loader("cifar100", load_cifar100),
    "mnist": _array_loader("mnist", load_mnist),
    FOLDER: _file_loader(FOLDER, load_image_folder),
    LIST: _file_loader(LIST, load_image_list),
    TENSORS: _file_loader(TENSORS, load_tensor_file),
}
# What `infer_dataset` reads a path's suffix as (a folder is always an image folder).
_SUFFIX_DATASETS = {
    **dict.fromkeys(LIST_SUFFIXES, LIST),
    **dict.fromkeys(TENSOR_SUFFIXES, TENSORS),
}


def infer_dataset(path: Path) -> str:
    """The dataset name of the user's images at `path`, from what the path is.

    Args:
        path: a folder (an image folder), a .csv or .json file (an image list) or a .npz
            or .pt file (a tensor file).

    Returns:
        'folder', 'list' or 'tensors'.

    Raises:
        GradleakError: the path does not exist or is none of these forms.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        return FOLDER
    forms = "a folder of class sub-folders, a .csv/.json image list or a .npz/.pt tensor file"
    if not path.exists():
        raise GradleakError(f"data {path} does not exist; give {forms}")
    dataset = _SUFFIX_DATASETS.get(path.suffix.lower())
    if dataset is None:
        raise GradleakError(f"data {path} is not one of the forms gradleak reads; give {forms}")
    return dataset


def load_dataset(
    name: str,
    root: Path | None,
    split: str = "test",
    *,
    size: tuple[int, int] | None = None,
    channels: int | None = None,
) -> ImageSource:
    """Load a dataset by name: cifar10, cifar100, mnist, or the user's images ('folder',
    'list', 'tensors', which need `size` and `channels`, 1 or 3)."""
    loader = _LOADERS.get(name.lower())
    if loader is None:
        raise GradleakError(f"unknown dataset {name!r}; choose one of {', '.join(_LOADERS)}")
    return loader(root, split, size, channels)


def dataset_stats(dataset: str, channels: int | None = None) -> DatasetSpec:
    """The statistics `dataset`'s images are normalised by default.

    Args:
        dataset: a dataset name, or one of `FILE_DATASETS`.
        channels: for `FILE_DATASETS`, 1 for grey images (default 3).

    Returns:
        The dataset's own spec, or `PHOTO_STATS` (`PHOTO_GREY_STATS` for channels=1) for
        the user's images (of which only the name, mean and std apply: the user's images
        have their own classes and image size).

    Raises:
        GradleakError: if the name is not a known dataset.
    """
    if dataset in FILE_DATASETS:
        return PHOTO_GREY_STATS if channels == 1 else PHOTO_STATS
    return get_dataset_spec(dataset)


def input_shape(
    dataset: str, image_size: int | None = None, *, channels: int | None = None
) -> tuple[int, tuple[int, int]]:
    """Channels and (height, width) of the images `open_images` returns for `dataset`.

    Args:
        dataset: a dataset name, or one of `FILE_DATASETS` (the user's images).
        image_size: side the user's images are resized to (default `FOLDER_IMAGE_SIZE`);
            for another dataset None or its own fixed side.
        channels: for the user's images 1 or 3 (default `FOLDER_CHANNELS`); for another
            dataset None or its own channel count.

    Returns:
        The channel count and the image size (H, W).

    Raises:
        GradleakError: if the name is unknown, another size or channel count is asked of
            a standard dataset, or the user's size lies outside 1..`MAX_IMAGE_SIZE`.
    """
    if dataset in FILE_DATASETS:
        side = image_size or FOLDER_IMAGE_SIZE
        if not 1 <= side <= MAX_IMAGE_SIZE:
            raise GradleakError(
                f"--image-size must be in 1..{MAX_IMAGE_SIZE}, got {side}; larger images do "
                "not fit in memory during an attack"
            )
        if channels not in (None, 1, FOLDER_CHANNELS):
            raise GradleakError(f"channels must be 1 (grey) or 3 (RGB), got {channels}")
        return channels or FOLDER_CHANNELS, (side, side)
    spec = get_dataset_spec(dataset)
    if image_size not in (None, spec.image_size[0]):
        raise GradleakError(
            f"{spec.name} images are {spec.image_size[0]} pixels; drop --image-size or use "
            "your own images (--dataset folder, list or tensors)"
        )
    if channels not in (None, spec.channels):
        raise GradleakError(f"{spec.name} images have {spec.channels} channel(s), not {channels}")
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


# How outputs name the user's images, by dataset: "folder DIR", "list FILE", ...
_FILE_DESCRIPTIONS = {FOLDER: "folder", LIST: "list", TENSORS: "tensor file"}


def _open_source(
    dataset: str, data_root: Path | None, split: str, size: tuple[int, int], channels: int
) -> tuple[ImageSource, str]:
    """The images and their description (see `open_images`)."""
    if dataset in FILE_DATASETS:
        source = load_dataset(dataset, data_root, split, size=size, channels=channels)
        return source, f"{_FILE_DESCRIPTIONS[dataset]} {data_root}"
    name = get_dataset_spec(dataset).name
    if data_root is None and name == "cifar10" and split == "test":
        # Enough for a smoke run or a single attack with no download.
        return load_bundled_cifar10(), BUNDLED_DESCRIPTION
    return load_dataset(dataset, data_root, split), f"{name} {split} split"


def open_images(
    dataset: str,
    data_root: Path | None,
    split: str = "test",
    image_size: int | None = None,
    normalize: str | None = None,
    *,
    channels: int | None = None,
) -> LoadedImages:
    """Open a dataset's split for reading images by index.

    Args:
        dataset: cifar10, cifar100, mnist, or the user's images: 'folder' (one sub-folder
            of images per class), 'list' (a .csv/.json list of path and label) or
            'tensors' (a .npz/.pt file of images and labels).
        data_root: the folder holding the dataset (for 'list' and 'tensors': the file).
            None with cifar10's test split: the CIFAR-10 test images bundled with
            gradleak (indices 0..7).
        split: 'test' or 'train' (the user's images have only 'test').
        image_size: side the user's images are resized and centre-cropped to (default
            `FOLDER_IMAGE_SIZE`); other datasets keep their fixed size.
        normalize: a `--normalize` spec (`gradleak.data.statistics`) replacing the default
            statistics (`dataset_stats`); `auto` computes them from the images here.
        channels: channels of the user's images, 1 or 3 (default `FOLDER_CHANNELS`).

    Returns:
        The opened images with their statistics, shape, class names and description.

    Raises:
        GradleakError: if the dataset is unknown, its files are missing or unreadable, the
            image size or channels cannot be honoured, or the normalize spec is bad.
    """
    channels, size = input_shape(dataset, image_size, channels=channels)
    stats = dataset_stats(dataset, channels)
    source, description = _open_source(dataset, data_root, split, size, channels)
    default = Normalization(stats.name, stats.mean, stats.std)
    chosen = normalization(normalize, default, channels, lambda: image_statistics(source))
    stats = replace(stats, name=chosen.name, mean=chosen.mean, std=chosen.std)
    return LoadedImages(source, stats, channels, size, description)
