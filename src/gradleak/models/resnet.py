"""CIFAR ResNets of depth 6n+2 (He et al. 2016) with an optional width factor."""

from __future__ import annotations

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
    """Two 3x3 conv + BN layers with a residual connection; 1x1 conv + BN when shapes change."""

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


class ResNet(nn.Module):
    """CIFAR ResNet: 3x3 stem, three stages of BasicBlocks (16k, 32k, 64k wide), pool, Linear.

    `depth` must be 6n+2 (20, 32, 56, ...): each stage holds n blocks. `width_factor` k
    multiplies every width, so ResNet20-4 has stages 64, 128 and 256 channels wide.
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
        channels = stem_width
        stages = []
        for multiple, stride in zip(_STAGE_MULTIPLES, _STAGE_STRIDES, strict=True):
            out_channels = stem_width * multiple
            blocks = []
            for index in range(blocks_per_stage):
                blocks.append(BasicBlock(channels, out_channels, stride if index == 0 else 1))
                channels = out_channels
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)
        init_resnet_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.classifier(torch.flatten(self.pool(out), 1))


def resnet20(
    num_classes: int,
    in_channels: int = 3,
    image_size: tuple[int, int] = (32, 32),
    *,
    width_factor: int = 1,
) -> ResNet:
    """ResNet20 (3 blocks per stage)."""
    return ResNet(num_classes, in_channels, image_size, depth=20, width_factor=width_factor)


def resnet32(
    num_classes: int,
    in_channels: int = 3,
    image_size: tuple[int, int] = (32, 32),
    *,
    width_factor: int = 1,
) -> ResNet:
    """ResNet32 (5 blocks per stage)."""
    return ResNet(num_classes, in_channels, image_size, depth=32, width_factor=width_factor)


def resnet56(
    num_classes: int,
    in_channels: int = 3,
    image_size: tuple[int, int] = (32, 32),
    *,
    width_factor: int = 1,
) -> ResNet:
    """ResNet56 (9 blocks per stage)."""
    return ResNet(num_classes, in_channels, image_size, depth=56, width_factor=width_factor)
