import copy
import math

import pytest
import torch
from torch import nn

from gradleak.core.errors import GradleakError
from gradleak.models import build_model
from gradleak.models.resnet import BasicBlock, ResNet, basic_stages

from .functional import autograd_matching_grad, gradient_matching_grads, param_grads


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_resnet20_parameter_count_is_standard() -> None:
    assert _count(build_model("resnet20", num_classes=10)) == 272_474


@pytest.mark.parametrize(("name", "blocks"), [("resnet20", 3), ("resnet32", 5), ("resnet56", 9)])
def test_blocks_per_stage(name: str, blocks: int) -> None:
    model = build_model(name, num_classes=10)
    assert [len(stage) for stage in (model.layer1, model.layer2, model.layer3)] == [blocks] * 3


def test_width_factor_four() -> None:
    model = build_model("resnet20-4", num_classes=10)
    assert model.conv1.out_channels == 64
    widths = [stage[-1].conv2.out_channels for stage in (model.layer1, model.layer2, model.layer3)]
    assert widths == [64, 128, 256]
    assert model.classifier.in_features == 256


def test_projection_shortcuts_only_where_shape_changes() -> None:
    model = build_model("resnet20", num_classes=10)
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    projections = [b for b in blocks if not isinstance(b.shortcut, nn.Identity)]
    assert len(projections) == 2
    for block in projections:
        conv, norm = block.shortcut
        assert conv.kernel_size == (1, 1) and conv.stride == (2, 2)
        assert isinstance(norm, nn.BatchNorm2d)


def test_kaiming_normal_conv_init() -> None:
    model = build_model("resnet20-4", num_classes=10)
    weight = model.layer3[1].conv1.weight
    fan_out = weight.shape[0] * weight.shape[2] * weight.shape[3]
    assert weight.std().item() == pytest.approx(math.sqrt(2 / fan_out), rel=0.05)


@pytest.mark.parametrize("depth", [21, 2, 0])
def test_bad_depth_raises(depth: int) -> None:
    with pytest.raises(GradleakError, match="depth"):
        ResNet(10, depth=depth)


def _matching_case(model: nn.Module) -> None:
    true_x = torch.randn(2, 3, 8, 8)
    ys = torch.tensor([[1, 4], [1, 4]])
    target = param_grads(model, true_x, ys[0])
    xs = torch.randn(2, 2, 3, 8, 8)
    grads = gradient_matching_grads(model, xs, ys, target)
    assert grads.shape == xs.shape
    assert torch.isfinite(grads).all() and grads.abs().sum() > 0
    expected = autograd_matching_grad(model, xs[1], ys[1], target)
    torch.testing.assert_close(grads[1], expected, rtol=1e-3, atol=1e-6)


def test_double_backward_eval_mode() -> None:
    _matching_case(build_model("resnet20", num_classes=5).eval())


def test_double_backward_train_mode_batch_norm() -> None:
    model = copy.deepcopy(build_model("resnet20", num_classes=5))
    torch.func.replace_all_batch_norm_modules_(model)
    _matching_case(model.train())


def test_resnet_refuses_images_too_small_for_batch_norm() -> None:
    with pytest.raises(GradleakError, match="at least 8×8"):
        build_model("resnet20", num_classes=10, image_size=(4, 4))
    assert build_model("resnet20", num_classes=10, image_size=(8, 8))(
        torch.randn(1, 3, 8, 8)
    ).shape == (
        1,
        10,
    )


def test_basic_stages_widths_strides_and_shortcuts() -> None:
    stages = basic_stages(3, [4, 8], [1, 2], [2, 3])
    assert [len(stage) for stage in stages] == [2, 3]
    expected = [  # (in, out, stride, projection shortcut) per block
        [(3, 4, 1, True), (4, 4, 1, False)],
        [(4, 8, 2, True), (8, 8, 1, False), (8, 8, 1, False)],
    ]
    for stage, blocks in zip(stages, expected, strict=True):
        assert isinstance(stage, nn.Sequential)
        for block, (cin, cout, stride, projection) in zip(stage, blocks, strict=True):
            assert isinstance(block, BasicBlock)
            assert (block.conv1.in_channels, block.conv2.out_channels) == (cin, cout)
            assert block.conv1.stride == (stride, stride)
            assert block.conv2.stride == (1, 1)
            assert isinstance(block.shortcut, nn.Identity) is not projection


def test_basic_stages_draw_the_weights_block_after_block() -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        stages = nn.Sequential(*basic_stages(2, [3, 6], [1, 2], [2, 1]))
        torch.manual_seed(5)
        by_hand = nn.Sequential(
            nn.Sequential(BasicBlock(2, 3, 1), BasicBlock(3, 3, 1)),
            nn.Sequential(BasicBlock(3, 6, 2)),
        )
    assert stages.state_dict().keys() == by_hand.state_dict().keys()
    for name, tensor in by_hand.state_dict().items():
        assert torch.equal(stages.state_dict()[name], tensor)


def test_basic_stages_need_one_entry_per_stage() -> None:
    with pytest.raises(ValueError):
        basic_stages(3, [4, 8], [1], [2, 2])


def test_resnet_class_is_what_the_registry_builds() -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        direct = ResNet(10, 1, (16, 16), depth=32, width_factor=2)
    built = build_model("resnet32-2", num_classes=10, in_channels=1, image_size=(16, 16), seed=0)
    assert direct.state_dict().keys() == built.state_dict().keys()
    for name, tensor in built.state_dict().items():
        assert torch.equal(direct.state_dict()[name], tensor)
