"""A Case: the server's model, one client's private batch, and the attacker's knowledge."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from gradleak.core.batch import PrivateBatch
from gradleak.core.errors import GradleakError
from gradleak.core.knowledge import Knowledge
from gradleak.data import (
    DatasetSpec,
    ImageSource,
    denormalize,
    get_dataset_spec,
    load_bundled_cifar10,
    load_dataset,
    load_image,
    normalize,
    stack,
)
from gradleak.models import build_model, check_checkpoint_model, load_checkpoint
from gradleak.scenario.config import RunConfig

# Normalisation of images that come from a folder or a single file: the usual photo statistics.
PHOTO_STATS = get_dataset_spec("imagenet")
FOLDER_IMAGE_SIZE = 32  # folder images and --image with --dataset folder, unless --image-size
FOLDER_IMAGE_CLASSES = 10  # classes of the model for --image with --dataset folder


@dataclass(frozen=True)
class Case:
    """Everything one run needs. Only `model` and `knowledge` may reach the attacker."""

    model: nn.Module
    batch: PrivateBatch
    knowledge: Knowledge
    class_names: tuple[str, ...]
    source: str

    def to_pixels(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised images back to [0, 1] pixels (clamped), for metrics and pictures."""
        return denormalize(images, self.knowledge.mean, self.knowledge.std).clamp(0, 1)


@dataclass(frozen=True)
class _Data:
    images01: torch.Tensor
    labels: torch.Tensor
    class_names: tuple[str, ...]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    stats_name: str
    source: str


def build_case(config: RunConfig) -> Case:
    """Load the private batch and the server's model that `config` describes."""
    config = config.validate()
    data = _load_data(config)
    channels, height, width = data.images01.shape[1:]
    model = build_model(
        config.model,
        num_classes=data.num_classes,
        in_channels=channels,
        image_size=(height, width),
        seed=config.seed,
    )
    if config.checkpoint is not None:
        check_checkpoint_model(config.checkpoint, config.model)
        load_checkpoint(model, config.checkpoint)
    batch = PrivateBatch(normalize(data.images01, data.mean, data.std), data.labels)
    local, guessed = config.attacker_local_training()
    knowledge = Knowledge(
        data_shape=(channels, height, width),
        num_classes=data.num_classes,
        batch_size=config.total_samples,
        mean=data.mean,
        std=data.std,
        model_mode=config.attacker_model_mode or config.model_mode,
        labels=data.labels if config.labels_known else None,
        dataset=data.stats_name,
        num_users=config.users,
        local_training=local,
        local_training_guessed=guessed,
        model_mode_guessed=config.attacker_model_mode is not None,
    )
    return Case(model, batch, knowledge, data.class_names, data.source)


def _load_data(config: RunConfig) -> _Data:
    if config.image is not None:
        return _single_image(config)
    if config.dataset == "folder":
        size = config.image_size or FOLDER_IMAGE_SIZE
        source = load_dataset(
            "folder", config.data_root, config.split, size=(size, size), channels=3
        )
        return _from_source(config, source, PHOTO_STATS, f"folder {config.data_root}")
    spec = get_dataset_spec(config.dataset)
    if config.image_size not in (None, spec.image_size[0]):
        raise GradleakError(
            f"{spec.name} images are {spec.image_size[0]} pixels; drop --image-size or use "
            "--dataset folder"
        )
    if config.data_root is None and config.dataset == "cifar10":
        return _from_source(config, load_bundled_cifar10(), spec, "bundled CIFAR-10 test images")
    source = load_dataset(config.dataset, config.data_root, config.split)
    return _from_source(config, source, spec, f"{spec.name} {config.split} split")


def _from_source(
    config: RunConfig, source: ImageSource, stats: DatasetSpec, description: str
) -> _Data:
    if config.total_samples > len(source):
        if config.users > 1:
            raise GradleakError(
                f"{config.users} users × {config.batch_size} samples need "
                f"{config.total_samples} images but {description} has {len(source)}; use "
                "fewer users (peers) or a smaller --batch-size"
            )
        raise GradleakError(
            f"batch size {config.batch_size} is larger than the {len(source)} images in "
            f"{description}; use --batch-size {len(source)} or fewer"
        )
    indices = config.batch_indices()
    if max(indices) >= len(source):
        raise GradleakError(
            f"image index {max(indices)} is out of range: {description} has {len(source)} "
            f"images (0..{len(source) - 1})"
        )
    images01, labels = stack(source, indices)
    num_classes = config.num_classes or len(source.class_names)
    _check_label_range(labels, num_classes)
    shown = ", ".join(str(i) for i in indices)
    return _Data(
        images01,
        labels,
        tuple(source.class_names),
        num_classes,
        stats.mean,
        stats.std,
        stats.name,
        f"{description}, indices {shown}",
    )


def _single_image(config: RunConfig) -> _Data:
    # The image takes the shape and statistics of the chosen dataset (CIFAR-10 by default).
    folder = config.dataset == "folder"
    stats = PHOTO_STATS if folder else get_dataset_spec(config.dataset)
    size = config.image_size or (FOLDER_IMAGE_SIZE if folder else stats.image_size[0])
    image01 = load_image(Path(config.image), (size, size), stats.channels)
    num_classes = config.num_classes or (FOLDER_IMAGE_CLASSES if folder else stats.num_classes)
    label = 0 if config.label is None else config.label
    labels = torch.tensor([label])
    _check_label_range(labels, num_classes)
    names = tuple(str(i) for i in range(num_classes))
    return _Data(
        image01.unsqueeze(0),
        labels,
        names,
        num_classes,
        stats.mean,
        stats.std,
        stats.name,
        f"image {config.image}, label {label}",
    )


def _check_label_range(labels: torch.Tensor, num_classes: int) -> None:
    bad = [int(v) for v in labels if not 0 <= int(v) < num_classes]
    if bad:
        raise GradleakError(
            f"label {bad[0]} is outside the {num_classes} classes (0..{num_classes - 1}); "
            "give a label in range or raise --num-classes"
        )
