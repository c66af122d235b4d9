"""The user's own model in a run: built first, so the data is read at the size it takes.

A registry model is built for the data; a factory (`MODULE:FACTORY`, `models/user.py`)
decides its own input and classes, so a run builds it first, probes what it takes
(`describe_model`, the data's own shape tried first) and asks the data for that size where
the data can be resized and no size was given. What cannot agree is refused in one line
before any image is read: another channel count, a size the data cannot take, a
`--num-classes` other than the model's, a `--label` beyond its classes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from gradleak.core.errors import GradleakError
from gradleak.data import FILE_DATASETS, input_shape
from gradleak.models import build_model
from gradleak.models.user import (
    ModelShape,
    build_user_model,
    check_labels_fit,
    describe_model,
    is_factory_spec,
)
from gradleak.scenario.plan import DataRequest, ModelRequest


@dataclass(frozen=True)
class FittedModel:
    """A user's model and the data request it fits.

    Attributes:
        model: the built model, on the CPU.
        shape: what it takes and gives (channels, image size, classes, batch norm).
        data: the request, with the model's image side where the data is resized to it.
    """

    model: nn.Module
    shape: ModelShape
    data: DataRequest


def is_user_model(request: ModelRequest) -> bool:
    """Whether the request names a factory rather than a registry model."""
    return is_factory_spec(request.name)


def fit_user_model(data: DataRequest, model: ModelRequest) -> FittedModel:
    """Build a factory's model and fit the data request to what it takes.

    Args:
        data: the run's data request.
        model: the run's model request; its name is a factory spec.

    Returns:
        The model, its shape and the data request (its `image_size` set to the model's side
        where the request gave none and the model does not take the data's default size).

    Raises:
        GradleakError: the model cannot be built or probed (`models/user.py`); it takes
            another channel count than the data; another size than a given --image-size,
            or than a dataset that is not resized; a --num-classes other than its own; or a
            --label of an --image beyond its classes.
    """
    name = model.name.strip()
    net = build_user_model(name, model.model_args, seed=model.seed)
    # A single --image is resized to any size; a dataset says whether it can be.
    dataset = None if data.image is not None else data.dataset
    prefer = _data_shape(data)
    channels = None
    if dataset in FILE_DATASETS:
        # The user's own images are read as grey or RGB, whichever the model takes.
        taken = describe_model(net, prefer, name=name).channels
        if taken != prefer[0] and taken in (1, 3):
            channels = taken
            prefer = input_shape(dataset, data.image_size, channels=taken)
    shape, side = _fit(net, name, prefer, data.image_size, dataset)
    if data.num_classes is not None and data.num_classes != shape.num_classes:
        raise GradleakError(
            f"--num-classes {data.num_classes} differs from the {shape.num_classes} classes model "
            f"{name} outputs; drop --num-classes (a factory decides its classes)"
        )
    fitted = replace(data, image_size=side, channels=channels)
    if data.image is not None:
        label = 0 if data.label is None else data.label
        check_labels_fit(torch.tensor([label]), shape.num_classes, name=name)
        fitted = replace(fitted, num_classes=shape.num_classes)
    return FittedModel(net, shape, fitted)


def dataset_image_size(
    name: str,
    model_args: Mapping[str, Any] | None,
    dataset: str,
    image_size: int | None,
    *,
    seed: int = 0,
) -> int | None:
    """The side `dataset`'s images are read at for a factory's model (training, studies).

    Args:
        name: a factory spec.
        model_args: its keyword arguments.
        dataset: the dataset's name.
        image_size: the side asked for (None: the dataset's default).
        seed: the seed the model is built with.

    Returns:
        `image_size`, or the model's side where none was asked for and the model does not
        take the dataset's default size.

    Raises:
        GradleakError: as `fit_user_model`, for the size and the channels.
    """
    name = name.strip()
    net = build_user_model(name, model_args, seed=seed)
    return _fit(net, name, input_shape(dataset, image_size), image_size, dataset)[1]


def checked_image_size(
    name: str,
    model_args: Mapping[str, Any] | None,
    dataset: str,
    image_size: int | None,
    input_shape_of: Callable[[], tuple[int, tuple[int, int]]],
    *,
    seed: int = 0,
) -> int | None:
    """The side a trainer reads `dataset` at, checked by building the model before any data.

    A factory decides its input: it is built and probed (`dataset_image_size`). A registry
    model is built once, thrown away, for the data's shape, so an unknown name or an
    impossible input size fails before any data is read (the class count does not change
    what can be built).

    Args:
        name: the model's name or factory spec.
        model_args: a factory's keyword arguments.
        dataset: the dataset's name.
        image_size: the side asked for (None: the dataset's default).
        input_shape_of: the trainer's channels and image size for a registry model.
        seed: the seed a factory is built with.

    Returns:
        The side to read the images at (`image_size` for a registry model).

    Raises:
        GradleakError: the model cannot be built for the data (one line).
    """
    if is_factory_spec(name):
        return dataset_image_size(name, model_args, dataset, image_size, seed=seed)
    channels, size = input_shape_of()
    build_model(
        name,
        num_classes=2,
        in_channels=channels,
        image_size=size,
        seed=0,
        model_args=model_args,
    )
    return image_size


def _data_shape(data: DataRequest) -> tuple[int, tuple[int, int]]:
    """The shape the data has without a size given to it: the model's first try."""
    if data.image is None:
        return input_shape(data.dataset, data.image_size)
    channels, (side, _) = input_shape(data.dataset)
    side = data.image_size or side
    return channels, (side, side)


def _fit(
    net: nn.Module,
    name: str,
    prefer: tuple[int, tuple[int, int]],
    given: int | None,
    dataset: str | None,
) -> tuple[ModelShape, int | None]:
    """The model's shape (the data's tried first) and the side the data is read at.

    Args:
        net: the built model.
        name: its spec, for messages.
        prefer: the data's channels and size without a size asked of it.
        given: the --image-size asked for, or None.
        dataset: the dataset, whose loader says whether it resizes; None: a single image,
            which always is.

    Raises:
        GradleakError: another channel count; another size than `given`, a non-square
            size, or a size a fixed-size dataset cannot take.
    """
    shape = describe_model(net, prefer, name=name)
    channels, size = prefer
    have = f"{channels}×{size[0]}×{size[1]}"
    if shape.channels != channels:
        raise GradleakError(
            f"model {name} takes {shape.channels}-channel images, but the data's have "
            f"{channels}; give the model in_channels={channels} or use data with "
            f"{shape.channels} channel(s)"
        )
    if shape.image_size == size:
        return shape, given
    height, width = shape.image_size
    takes = f"model {name} takes {shape.input} images"
    if given is not None:
        raise GradleakError(
            f"{takes}, not {have} (--image-size {given}); use --image-size {height}"
        )
    if height != width:
        raise GradleakError(f"{takes}, not {have}; images are resized to squares only")
    if dataset is not None:
        try:
            input_shape(dataset, height)
        except GradleakError as exc:  # a dataset of fixed size: the model cannot take it
            raise GradleakError(
                f"{takes}, but {dataset}'s are {have} and are not resized; use a model for "
                f"{have} images or your own images (--dataset folder --image-size {height})"
            ) from exc
    return shape, height
