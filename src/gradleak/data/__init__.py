"""Loaders for real image data: CIFAR pickles, MNIST idx, image folders, image lists, tensor
files, bundled samples; normalisation statistics."""

from __future__ import annotations

from gradleak.data.bundled import load_bundled_cifar10
from gradleak.data.cifar import load_cifar10, load_cifar100
from gradleak.data.datasets import DATASETS, DatasetSpec, get_dataset_spec
from gradleak.data.folder import FolderImageSource, load_image_folder
from gradleak.data.image import IMAGE_SUFFIXES, is_image_file, load_image
from gradleak.data.listing import load_image_list
from gradleak.data.loading import (
    FILE_DATASETS,
    FOLDER_IMAGE_CLASSES,
    FOLDER_IMAGE_SIZE,
    PHOTO_STATS,
    LoadedImages,
    dataset_stats,
    infer_dataset,
    input_shape,
    load_dataset,
    open_images,
)
from gradleak.data.mnist import load_mnist
from gradleak.data.normalize import denormalize, normalize, pixel_bounds
from gradleak.data.source import ArrayImageSource, ImageSource, stack
from gradleak.data.statistics import Normalization, parse_normalize
from gradleak.data.tensors import TensorImageSource, load_tensor_file

__all__ = [
    "DATASETS",
    "FILE_DATASETS",
    "FOLDER_IMAGE_CLASSES",
    "FOLDER_IMAGE_SIZE",
    "IMAGE_SUFFIXES",
    "PHOTO_STATS",
    "ArrayImageSource",
    "DatasetSpec",
    "FolderImageSource",
    "ImageSource",
    "LoadedImages",
    "Normalization",
    "TensorImageSource",
    "dataset_stats",
    "denormalize",
    "get_dataset_spec",
    "infer_dataset",
    "input_shape",
    "is_image_file",
    "load_bundled_cifar10",
    "load_cifar10",
    "load_cifar100",
    "load_dataset",
    "load_image",
    "load_image_folder",
    "load_image_list",
    "load_mnist",
    "load_tensor_file",
    "normalize",
    "open_images",
    "parse_normalize",
    "pixel_bounds",
    "stack",
]
