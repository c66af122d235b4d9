"""build_case: the private batch, the server's model and the knowledge a config describes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from gradleak.core.errors import GradleakError
from gradleak.data import get_dataset_spec, load_bundled_cifar10, normalize
from gradleak.scenario import RunConfig, build_case

pytestmark = pytest.mark.usefixtures("one_thread")


def _expected_batch(indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    source = load_bundled_cifar10()
    spec = get_dataset_spec("cifar10")
    images = torch.stack([source[i][0] for i in indices])
    labels = torch.tensor([source[i][1] for i in indices])
    return normalize(images, spec.mean, spec.std), labels


@pytest.mark.parametrize(
    ("indices", "batch_size", "expected"),
    [((0,), 1, [0]), ((2,), 3, [2, 3, 4]), ((5, 1), 2, [5, 1])],
)
def test_bundled_batch(indices: tuple[int, ...], batch_size: int, expected: list[int]) -> None:
    case = build_case(RunConfig(indices=indices, batch_size=batch_size, progress=False))
    images, labels = _expected_batch(expected)
    torch.testing.assert_close(case.client.batch.images, images)
    assert case.client.batch.labels.tolist() == labels.tolist()
    spec = get_dataset_spec("cifar10")
    k = case.server.knowledge
    assert (k.data_shape, k.num_classes, k.batch_size) == ((3, 32, 32), 10, batch_size)
    assert (k.mean, k.std, k.dataset) == (spec.mean, spec.std, "cifar10")
    assert k.labels is None
    assert len(case.client.class_names) == 10
    assert "bundled" in case.client.source
    # to_pixels undoes the normalisation.
    source = load_bundled_cifar10()
    torch.testing.assert_close(
        case.server.decode(case.client.batch.images)[0], source[expected[0]][0]
    )


def test_bundled_images_are_the_cifar10_test_images(shared_data: Path) -> None:
    bundled = build_case(RunConfig(indices=(0,), batch_size=8, progress=False))
    real = build_case(RunConfig(data_root=shared_data, indices=(0,), batch_size=8, progress=False))
    assert torch.equal(bundled.client.batch.images, real.client.batch.images)
    assert torch.equal(bundled.client.batch.labels, real.client.batch.labels)
    assert bundled.client.class_names == real.client.class_names


def test_mnist_case_has_one_channel(shared_data: Path) -> None:
    case = build_case(RunConfig(dataset="mnist", data_root=shared_data, progress=False))
    assert case.client.batch.images.shape == (1, 1, 28, 28)
    assert case.server.knowledge.data_shape == (1, 28, 28)
    assert case.server.model(case.client.batch.images).shape == (1, 10)


def test_model_is_seeded() -> None:
    a = build_case(RunConfig(seed=3, progress=False)).server.model.state_dict()
    b = build_case(RunConfig(seed=3, progress=False)).server.model.state_dict()
    c = build_case(RunConfig(seed=4, progress=False)).server.model.state_dict()
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert not all(torch.equal(a[n], c[n]) for n in a)


def test_single_image_file(tmp_path: Path) -> None:
    path = tmp_path / "photo.png"
    Image.new("RGB", (48, 40), (255, 0, 0)).save(path)
    case = build_case(RunConfig(image=path, label=7, progress=False))
    assert case.client.batch.images.shape == (1, 3, 32, 32)
    assert case.client.batch.labels.tolist() == [7]
    pixels = case.server.decode(case.client.batch.images)[0]
    torch.testing.assert_close(pixels[:, 5, 5], torch.tensor([1.0, 0.0, 0.0]))
    assert case.server.knowledge.num_classes == 10


def test_single_image_with_more_classes(tmp_path: Path) -> None:
    path = tmp_path / "photo.png"
    Image.new("RGB", (32, 32), (0, 0, 255)).save(path)
    case = build_case(RunConfig(image=path, label=50, num_classes=100, progress=False))
    assert case.server.knowledge.num_classes == 100
    assert case.server.model(case.client.batch.images).shape == (1, 100)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (RunConfig(batch_size=9), "batch size 9 is larger than the 8 images"),
        (RunConfig(indices=(8,)), "image index 8 is out of range"),
        (RunConfig(indices=(7,), batch_size=2), "image index 8 is out of range"),
        (RunConfig(image_size=64), "cifar10 images are 32 pixels"),
        (RunConfig(model="vgg"), "unknown model 'vgg'"),
        (RunConfig(dataset="svhn"), "unknown dataset 'svhn'"),
        (RunConfig(dataset="mnist"), "--data-root DIR is required"),
        (RunConfig(indices=(3, 3), batch_size=2), "image indices repeat"),
        (RunConfig(split="train"), "bundled CIFAR-10 images are test images"),
        (RunConfig(split="validation"), "split 'validation' is not one of"),
        (RunConfig(seed=2**64), "seed must be in 0..2\\*\\*63-1"),
        (RunConfig(label=3), "--label sets the label of --image"),
    ],
)
def test_bad_cases(config: RunConfig, message: str) -> None:
    with pytest.raises(GradleakError, match=message):
        build_case(config)


def test_label_outside_classes(tmp_path: Path) -> None:
    path = tmp_path / "photo.png"
    Image.new("RGB", (32, 32)).save(path)
    with pytest.raises(GradleakError, match=r"label 50 is outside the 10 classes \(0..9\)"):
        build_case(RunConfig(image=path, label=50))


def test_missing_dataset_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(GradleakError, match="test_batch") as exc:
        build_case(RunConfig(data_root=tmp_path))
    assert str(tmp_path) in str(exc.value)
