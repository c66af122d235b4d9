import math

import pytest
import torch
from torch import nn

from gradleak.attacks.matching.problem import attacker_model
from gradleak.core.errors import GradleakError
from gradleak.models import available_models, build_model, classifier_layer
from gradleak.models.resnet import BasicBlock

from .functional import autograd_matching_grad, gradient_matching_grads, param_grads


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([t.flatten().float() for t in model.state_dict().values()])


def test_parameter_count_matches_torchvision() -> None:
    model = build_model("resnet18", num_classes=1000, image_size=(224, 224))
    assert _count(model) == 11_689_512


def test_registered_and_listed() -> None:
    assert "resnet18" in available_models()
    assert (
        build_model(" ResNet18 ", num_classes=10, image_size=(64, 64)).classifier.out_features == 10
    )


def test_imagenet_batch_output_shape() -> None:
    model = build_model("resnet18", num_classes=1000, image_size=(224, 224)).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 224, 224)).shape == (2, 1000)


@pytest.mark.parametrize("channels", [3, 1])
def test_small_images_and_other_channels(channels: int) -> None:
    model = build_model("resnet18", num_classes=10, in_channels=channels, image_size=(64, 64))
    with torch.no_grad():
        assert model.eval()(torch.randn(2, channels, 64, 64)).shape == (2, 10)
        # At the minimum size one image in train mode still gives batch norm 2x2 values.
        assert model.train()(torch.randn(1, channels, 64, 64)).shape == (1, 10)


def test_stages_and_projection_shortcuts() -> None:
    model = build_model("resnet18", num_classes=10, image_size=(64, 64))
    assert model.conv1.kernel_size == (7, 7) and model.conv1.stride == (2, 2)
    assert model.conv1.padding == (3, 3) and model.conv1.bias is None
    assert isinstance(model.maxpool, nn.MaxPool2d)
    stages = (model.layer1, model.layer2, model.layer3, model.layer4)
    assert [len(stage) for stage in stages] == [2, 2, 2, 2]
    assert [stage[-1].conv2.out_channels for stage in stages] == [64, 128, 256, 512]
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    projections = [b for b in blocks if not isinstance(b.shortcut, nn.Identity)]
    assert len(projections) == 3
    for block in projections:
        conv, norm = block.shortcut
        assert conv.kernel_size == (1, 1) and conv.stride == (2, 2)
        assert isinstance(norm, nn.BatchNorm2d)


def test_torchvision_initialisation() -> None:
    model = build_model("resnet18", num_classes=10, image_size=(64, 64))
    weight = model.layer4[1].conv1.weight
    fan_out = weight.shape[0] * weight.shape[2] * weight.shape[3]
    assert weight.std().item() == pytest.approx(math.sqrt(2 / fan_out), rel=0.05)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.equal(m.weight, torch.ones_like(m.weight)) for m in norms)
    assert all(torch.equal(m.bias, torch.zeros_like(m.bias)) for m in norms)


@pytest.mark.parametrize("size", [(32, 32), (63, 63), (224, 32), (8, 224)])
def test_too_small_images_raise(size: tuple[int, int]) -> None:
    with pytest.raises(GradleakError, match="at least 64×64") as info:
        build_model("resnet18", num_classes=10, image_size=size)
    assert "\n" not in str(info.value)


def test_seed_fixes_weights() -> None:
    first = build_model("resnet18", num_classes=10, image_size=(64, 64), seed=3)
    second = build_model("resnet18", num_classes=10, image_size=(64, 64), seed=3)
    other = build_model("resnet18", num_classes=10, image_size=(64, 64), seed=4)
    assert torch.equal(_flat(first), _flat(second))
    assert not torch.equal(_flat(first), _flat(other))


def test_classifier_layer_finds_final_linear() -> None:
    model = build_model("resnet18", num_classes=10, image_size=(64, 64))
    name, layer = classifier_layer(model)
    assert name == "classifier" and layer is model.classifier
    assert (layer.in_features, layer.out_features) == (512, 10)


def _train_replica(dtype: torch.dtype = torch.float32) -> nn.Module:
    model = build_model("resnet18", num_classes=10, image_size=(64, 64)).to(dtype)
    return attacker_model(model, "train")


def test_vmapped_gradient_matching_in_train_mode() -> None:
    # The attack engine's path: train-mode replica, vmap over trials of a gradient of a
    # parameter gradient, one private image per trial.
    model = _train_replica()
    assert model.training
    target = param_grads(model, torch.randn(1, 3, 64, 64), torch.tensor([3]))
    shapes = {name: p.shape for name, p in model.named_parameters()}
    assert {name: g.shape for name, g in target.items()} == shapes
    assert all(torch.isfinite(g).all() for g in target.values())
    xs = torch.randn(2, 1, 3, 64, 64)
    grads = gradient_matching_grads(model, xs, torch.tensor([[3], [3]]), target)
    assert grads.shape == xs.shape
    assert torch.isfinite(grads).all() and grads.abs().sum() > 0


def test_vmapped_gradient_matching_agrees_with_autograd() -> None:
    # In float64: with one image, the last stage's train-mode batch norm sees only 2x2
    # values per channel, and the float32 results of the two paths differ by round-off.
    model = _train_replica(torch.float64)
    target = param_grads(model, torch.randn(1, 3, 64, 64, dtype=torch.float64), torch.tensor([3]))
    xs = torch.randn(2, 1, 3, 64, 64, dtype=torch.float64)
    ys = torch.tensor([[3], [5]])
    grads = gradient_matching_grads(model, xs, ys, target)
    expected = autograd_matching_grad(model, xs[1], ys[1], target)
    torch.testing.assert_close(grads[1], expected, rtol=1e-6, atol=1e-6)
