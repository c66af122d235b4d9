"""One canonical name per architecture: any spelling of it reads the same checkpoints."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from gradleak.core.errors import GradleakError
from gradleak.models import (
    build_model,
    canonical_model_name,
    check_checkpoint_model,
    is_model_name,
    load_checkpoint,
    read_checkpoint_metadata,
    save_checkpoint,
)


@pytest.mark.parametrize(
    ("names", "canonical"),
    [
        (("mlp", "mlp2", "MLP-1024", "mlp2-1024", " mlp02 "), "mlp2-1024"),
        (("mlp-512", "mlp2-512"), "mlp2-512"),
        (("mlp3", "mlp3-1024"), "mlp3-1024"),
        (("convnet", "convnet-64"), "convnet-64"),
        (("resnet20", "resnet20-1", "ResNet20"), "resnet20-1"),
        (("lenet", " LeNet "), "lenet"),
        (("resnet18",), "resnet18"),
    ],
)
def test_every_spelling_has_one_canonical_name(names: tuple[str, ...], canonical: str) -> None:
    assert {canonical_model_name(name) for name in names} == {canonical}
    assert canonical_model_name(canonical) == canonical


NAMES = ["mlp", "mlp2", "mlp-64", "mlp2-64", "mlp3-64", "mlp1-64", "convnet-8", "convnet-16"]
NAMES += ["resnet20", "resnet20-1", "resnet20-2", "resnet32", "lenet", "cnn6"]


def _shapes(name: str) -> dict[str, tuple[int, ...]]:
    model = build_model(name, num_classes=10, seed=0)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_canonical_names_agree_exactly_when_the_architectures_do() -> None:
    shapes = {name: _shapes(name) for name in NAMES}
    for a, b in itertools.combinations(NAMES, 2):
        same_name = canonical_model_name(a) == canonical_model_name(b)
        assert same_name == (shapes[a] == shapes[b]), (a, b)


@pytest.mark.parametrize(
    ("saved", "asked"), [("mlp", "mlp2"), ("mlp2", "mlp"), ("mlp", "mlp2-1024")]
)
def test_a_checkpoint_saved_under_one_spelling_loads_under_another(
    tmp_path: Path, saved: str, asked: str
) -> None:
    source = build_model(saved, num_classes=10, seed=0)
    path = save_checkpoint(source, tmp_path / "c.pt", model=saved)
    check_checkpoint_model(path, asked)
    target = load_checkpoint(build_model(asked, num_classes=10, seed=1), path)
    assert torch.equal(target.classifier.weight, source.classifier.weight)


def test_checkpoints_record_the_canonical_name(tmp_path: Path) -> None:
    model = build_model("mlp-32", num_classes=10)
    path = save_checkpoint(model, tmp_path / "c.pt", model="MLP-32")
    assert read_checkpoint_metadata(path)["model"] == "mlp2-32"
    # A name the registry does not know is kept as given.
    other = save_checkpoint(model, tmp_path / "d.pt", model="my_models:Net")
    assert read_checkpoint_metadata(other)["model"] == "my_models:Net"


def test_checkpoints_that_recorded_the_name_as_given_still_load(tmp_path: Path) -> None:
    model = build_model("mlp", num_classes=10)
    path = tmp_path / "old.pt"
    torch.save({"state_dict": model.state_dict(), "metadata": {"model": "mlp"}}, path)
    for asked in ("mlp", "mlp2", "mlp-1024"):
        check_checkpoint_model(path, asked)
    with pytest.raises(GradleakError, match="saved from model 'mlp', not 'mlp3'"):
        check_checkpoint_model(path, "mlp3")


def test_is_model_name() -> None:
    assert is_model_name("mlp2-7") and is_model_name(" ResNet20 ")
    assert not is_model_name("mlp-") and not is_model_name("vgg16") and not is_model_name(3)
