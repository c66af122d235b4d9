"""The standard datasets' shapes and normalisation statistics."""

from __future__ import annotations

from dataclasses import dataclass

from gradleak.core.errors import GradleakError


@dataclass(frozen=True)
class DatasetSpec:
    """What an attacker may be told about a dataset: its shape and normalisation."""

    name: str
    num_classes: int
    channels: int
    image_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    default_folder: str  # folder name under a data root, "" if none


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            name="cifar10",
            num_classes=10,
            channels=3,
            image_size=(32, 32),
            mean=(0.4914, 0.4822, 0.4465),
            std=(0.2470, 0.2435, 0.2616),
            default_folder="cifar-10-batches-py",
        ),
        DatasetSpec(
            name="cifar100",
            num_classes=100,
            channels=3,
            image_size=(32, 32),
            mean=(0.5071, 0.4865, 0.4409),
            std=(0.2673, 0.2564, 0.2762),
            default_folder="cifar-100-python",
        ),
        DatasetSpec(
            name="mnist",
            num_classes=10,
            channels=1,
            image_size=(28, 28),
            mean=(0.1307,),
            std=(0.3081,),
            default_folder="mnist",
        ),
        DatasetSpec(
            name="imagenet",
            num_classes=1000,
            channels=3,
            image_size=(224, 224),
            mean=(0.485, 0.456, 0.406),
            std=(0.229, 0.224, 0.225),
            default_folder="imagenet-val",
        ),
    )
}


def get_dataset_spec(name: str) -> DatasetSpec:
    """Look up a dataset's spec by name (case-insensitive)."""
    spec = DATASETS.get(name.lower())
    if spec is None:
        raise GradleakError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return spec
