"""CIFAR ResNets of depth 6n+2 (He et al. 2016) with an optional width factor."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from gradleak.core.errors import GradleakError
from gradleak.models._checks import common_args, positive_int

_BASE_WIDTH = 16
_STAGE_MULTIPLES = (1, 2, 4)
_STAGE_STRIDES = (1, 2, 2)
_MIN_SIDE = 8


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    # No conv bias: every conv is followed by BatchNorm, whose shift makes one redundant.
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def init_resnet_weights(model: nn.Module) -> None:
    """He et al.'s scheme (as torchvision): Kaiming-normal convs, unit BN; Linear as default."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


class BasicBlock(nn.Module):
    """Two 3x3 conv + BN layers with a residual connection; 1x1 conv + BN when shapes change.

    Args:
        in_channels: channels of the block's input.
        out_channels: channels of its output (and of its two convolutions).
        stride: stride of the first convolution and of the shortcut; 2 halves each side.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_channels, out_channels, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU(inplace=False)
        self.conv2 = _conv3x3(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu2 = nn.ReLU(inplace=False)
        self.shortcut: nn.Module
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        # Out-of-place add: the input may be a tensor autograd or vmap must not see mutated.
        return self.relu2(out + self.shortcut(x))


def basic_stages(
    in_channels: int, widths: Sequence[int], strides: Sequence[int], blocks: Sequence[int]
) -> list[nn.Sequential]:
    """The residual stages of a ResNet: stage i holds `blocks[i]` BasicBlocks `widths[i]` wide.

    The first block of stage i takes the previous stage's channels (`in_channels` for the
    first stage) with stride `strides[i]`; the stage's other blocks keep its width with
    stride 1. Blocks are built in order, stage by stage.

    Args:
        in_channels: channels of the first stage's input (the stem's output).
        widths: output channels of each stage.
        strides: stride of each stage's first block.
        blocks: number of blocks of each stage, each >= 1.

    Returns:
        One nn.Sequential of BasicBlocks per stage.

    Raises:
        ValueError: when `widths`, `strides` and `blocks` differ in length.
    """
    channels = in_channels
    stages = []
    for out_channels, stride, count in zip(widths, strides, blocks, strict=True):
        stage = []
        for index in range(count):
            stage.append(BasicBlock(channels, out_channels, stride if index == 0 else 1))
            channels = out_channels
        stages.append(nn.Sequential(*stage))
    return stages


class ResNet(nn.Module):
    """CIFAR ResNet: 3x3 stem, three stages of BasicBlocks (16k, 32k, 64k wide), pool, Linear.

    `depth` must be 6n+2 (20, 32, 56, ...): each stage holds n blocks. `width_factor` k
    multiplies every width, so ResNet20-4 has stages 64, 128 and 256 channels wide.
    Built by name as `resnet20[-K]`, `resnet32[-K]` or `resnet56[-K]` (`build_model`). It
    maps images B×C×H×W to logits B×num_classes; global average pooling makes it accept
    any image size of at least 8×8.

    Args:
        num_classes: number of output logits; an int >= 1.
        in_channels: channels of the input images; an int >= 1, default 3.
        image_size: (height, width) of the input images, each at least 8; default (32, 32).
        depth: 6n+2 layers with n >= 1 (20, 32, 56, ...); default 20.
        width_factor: k, multiplying every width; an int >= 1, default 1.

    Raises:
        GradleakError: when `num_classes` or `in_channels` is not an int >= 1.
        GradleakError: when `image_size` is not a (height, width) pair of ints >= 1.
        GradleakError: when the image is smaller than 8×8.
        GradleakError: when `depth` or `width_factor` is not an int >= 1.
        GradleakError: when `depth` is not 6n+2 with n >= 1.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        image_size: tuple[int, int] = (32, 32),
        *,
        depth: int = 20,
        width_factor: int = 1,
    ) -> None:
        super().__init__()
        # Global average pooling makes the net size-agnostic, but after two stride-2 stages a
        # batch-norm layer in train mode needs more than one value per channel for one image.
        num_classes, in_channels, (height, width) = common_args(
            num_classes, in_channels, image_size
        )
        if min(height, width) < _MIN_SIDE:
            raise GradleakError(
                f"resnets need images of at least {_MIN_SIDE}×{_MIN_SIDE} pixels, got "
                f"{height}×{width}; use a larger --image-size"
            )
        depth = positive_int("resnet depth", depth)
        width_factor = positive_int("resnet width factor", width_factor)
        if depth < 8 or (depth - 2) % 6 != 0:
            raise GradleakError(
                f"resnet depth must be 6n+2 with n >= 1, got {depth}; use e.g. 20, 32 or 56"
            )
        blocks_per_stage = (depth - 2) // 6
        stem_width = _BASE_WIDTH * width_factor
        self.conv1 = _conv3x3(in_channels, stem_width)
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.relu = nn.ReLU(inplace=False)
        widths = [stem_width * multiple for multiple in _STAGE_MULTIPLES]
        self.layer1, self.layer2, self.layer3 = basic_stages(
            stem_width, widths, _STAGE_STRIDES, [blocks_per_stage] * len(widths)
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(widths[-1], num_classes)
        init_resnet_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.classifier(torch.flatten(self.pool(out), 1))
