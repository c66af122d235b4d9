"""A state dict in torchvision's ResNet-18 naming loads into gradleak's resnet18."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from gradleak.core.errors import GradleakError
from gradleak.models import build_model, check_checkpoint_model, load_checkpoint
from gradleak.models.torchvision_names import (
    from_torchvision_name,
    is_torchvision_resnet,
    to_torchvision,
    to_torchvision_name,
)

_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _torchvision_resnet18_names() -> list[str]:
    """The keys of torchvision.models.resnet18().state_dict(), written out from its
    definition (conv1, bn1, layer1-4 of two BasicBlocks, downsample in the first block of
    layers 2-4, fc), independently of gradleak's mapping."""
    names = ["conv1.weight", *(f"bn1.{b}" for b in _BN)]
    for layer in range(1, 5):
        for block in range(2):
            prefix = f"layer{layer}.{block}"
            for conv in (1, 2):
                names.append(f"{prefix}.conv{conv}.weight")
                names += [f"{prefix}.bn{conv}.{b}" for b in _BN]
            if layer > 1 and block == 0:
                names.append(f"{prefix}.downsample.0.weight")
                names += [f"{prefix}.downsample.1.{b}" for b in _BN]
    return [*names, "fc.weight", "fc.bias"]


def _randomised(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """The model with every parameter and batch-norm statistic drawn at random."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                values = torch.rand(tensor.shape, generator=generator)
                # Variances stay positive; everything else centred.
                tensor.copy_(values + 0.5 if name.endswith("running_var") else values - 0.5)
    return model


def test_the_mapping_gives_torchvision_names_exactly() -> None:
    model = build_model("resnet18", num_classes=10, image_size=(64, 64))
    names = [to_torchvision_name(name) for name in model.state_dict()]
    assert names == _torchvision_resnet18_names()
    assert [from_torchvision_name(n) for n in names] == list(model.state_dict())


def test_a_torchvision_state_dict_loads_and_computes_the_same(tmp_path: Path) -> None:
    source = _randomised(build_model("resnet18", num_classes=10, image_size=(64, 64)), 1)
    state = to_torchvision(source.state_dict())
    assert is_torchvision_resnet(state)
    # As torchvision's published files: no batch-norm counters, keys in another order.
    items = [(k, v.clone()) for k, v in state.items() if not k.endswith("num_batches_tracked")]
    random.Random(0).shuffle(items)
    path = tmp_path / "resnet18-torchvision.pth"
    torch.save(dict(items), path)
    check_checkpoint_model(path, "resnet18")  # no gradleak metadata: not refused
    target = build_model("resnet18", num_classes=10, image_size=(64, 64), seed=5)
    load_checkpoint(target, path)
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    source.eval()
    target.eval()
    with torch.no_grad():
        assert torch.equal(target(images), source(images))
    assert int(target.bn1.num_batches_tracked) == 0


def test_a_torchvision_state_dict_of_another_shape_is_refused_in_one_line(
    tmp_path: Path,
) -> None:
    state = to_torchvision(
        build_model("resnet18", num_classes=1000, image_size=(64, 64)).state_dict()
    )
    path = tmp_path / "imagenet.pth"
    torch.save({"state_dict": state}, path)
    target = build_model("resnet18", num_classes=10, image_size=(64, 64))
    with pytest.raises(GradleakError) as error:
        load_checkpoint(target, path)
    message = str(error.value)
    assert "\n" not in message
    assert "shape mismatches classifier.weight (1000, 512) vs (10, 512)" in message


def test_other_models_keep_their_names(tmp_path: Path) -> None:
    # A state dict with an fc layer is read as torchvision's only for gradleak's resnet18.
    lenet = build_model("lenet", num_classes=10)
    state = {
        ("fc." + k.split(".", 1)[1] if k.startswith("classifier.") else k): v
        for k, v in lenet.state_dict().items()
    }
    path = tmp_path / "renamed.pt"
    torch.save(state, path)
    with pytest.raises(GradleakError, match="missing keys classifier"):
        load_checkpoint(build_model("lenet", num_classes=10), path)
