"""Normalisation, its inverse, the pixel box, and the dataset statistics table."""

from __future__ import annotations

import pytest
import torch

from gradleak.core.errors import GradleakError
from gradleak.data import (
    DATASETS,
    DatasetSpec,
    denormalize,
    get_dataset_spec,
    normalize,
    pixel_bounds,
)

MEAN, STD = (0.5, 0.25, 0.0), (0.5, 0.25, 2.0)


def test_normalize_values() -> None:
    x = torch.full((2, 3, 4, 4), 0.5)
    y = normalize(x, MEAN, STD)
    assert y.shape == x.shape
    assert y[:, 0].eq(0.0).all() and y[:, 1].eq(1.0).all() and y[:, 2].eq(0.25).all()


def test_round_trip_any_leading_dims() -> None:
    x = torch.rand(2, 5, 3, 6, 7, generator=torch.Generator().manual_seed(0))
    spec = get_dataset_spec("cifar10")
    z = normalize(x, spec.mean, spec.std)
    assert torch.allclose(denormalize(z, spec.mean, spec.std), x, atol=1e-6)
    single = torch.rand(3, 2, 2)
    assert torch.allclose(denormalize(normalize(single, MEAN, STD), MEAN, STD), single)
    double = x.double()
    assert normalize(double, spec.mean, spec.std).dtype == torch.float64


def test_pixel_bounds() -> None:
    lower, upper = pixel_bounds(MEAN, STD)
    assert lower.shape == upper.shape == (3, 1, 1)
    assert lower.flatten().tolist() == [-1.0, -1.0, 0.0]
    assert upper.flatten().tolist() == [1.0, 3.0, 0.5]
    spec = get_dataset_spec("mnist")
    lo, hi = pixel_bounds(spec.mean, spec.std)
    assert lo.item() == pytest.approx(-0.1307 / 0.3081)
    assert hi.item() == pytest.approx((1 - 0.1307) / 0.3081)
    # The box is exactly the image of black and white pixels.
    c10 = get_dataset_spec("cifar10")
    lo, hi = pixel_bounds(c10.mean, c10.std)
    assert torch.allclose(normalize(torch.zeros(3, 2, 2), c10.mean, c10.std), lo.expand(3, 2, 2))
    assert torch.allclose(normalize(torch.ones(3, 2, 2), c10.mean, c10.std), hi.expand(3, 2, 2))


def test_bad_statistics() -> None:
    with pytest.raises(GradleakError, match="C=3"):
        normalize(torch.zeros(1, 2, 4, 4), MEAN, STD)
    with pytest.raises(GradleakError, match="std has 2"):
        pixel_bounds(MEAN, (1.0, 1.0))
    with pytest.raises(GradleakError, match="positive"):
        denormalize(torch.zeros(3, 1, 1), MEAN, (1.0, 0.0, 1.0))


def test_dataset_specs() -> None:
    assert set(DATASETS) == {"cifar10", "cifar100", "mnist", "imagenet"}
    c10 = get_dataset_spec("cifar10")
    assert isinstance(c10, DatasetSpec)
    assert (c10.num_classes, c10.channels, c10.image_size) == (10, 3, (32, 32))
    assert c10.mean == (0.4914, 0.4822, 0.4465) and c10.std == (0.2470, 0.2435, 0.2616)
    assert c10.default_folder == "cifar-10-batches-py"
    c100 = get_dataset_spec("CIFAR100")
    assert c100.num_classes == 100 and c100.mean == (0.5071, 0.4865, 0.4409)
    assert c100.std == (0.2673, 0.2564, 0.2762)
    mnist = get_dataset_spec("mnist")
    assert (mnist.channels, mnist.image_size, mnist.mean, mnist.std) == (
        1,
        (28, 28),
        (0.1307,),
        (0.3081,),
    )
    imagenet = get_dataset_spec("imagenet")
    assert imagenet.image_size == (224, 224) and imagenet.num_classes == 1000
    assert imagenet.mean == (0.485, 0.456, 0.406) and imagenet.std == (0.229, 0.224, 0.225)
    with pytest.raises(GradleakError, match="cifar10, cifar100, mnist, imagenet"):
        get_dataset_spec("svhn")
    with pytest.raises(AttributeError):
        c10.name = "other"  # type: ignore[misc]
