"""The ImageNet ResNet-18 (He et al. 2016), layer for layer as torchvision builds it."""

from __future__ import annotations

import torch
from torch import nn

from gradleak.core.errors import GradleakError
from gradleak.models._checks import common_args
from gradleak.models.resnet import BasicBlock, init_resnet_weights

_STEM_WIDTH = 64
_STAGE_WIDTHS = (64, 128, 256, 512)
_STAGE_STRIDES = (1, 2, 2, 2)
_BLOCKS_PER_STAGE = (2, 2, 2, 2)
# The stem conv, the max-pool and three stride-2 stages shrink each side by 32 (rounding
# up). The last stage's batch norm in train mode needs more than one value per channel for
# a single image, so its map must be at least 2x2: 64 is the smallest such power of two.
_DOWNSAMPLING = 32
_MIN_SIDE = 2 * _DOWNSAMPLING


class ResNet18(nn.Module):
    """ImageNet ResNet-18: 7x7/2 conv + BN + ReLU, 3x3/2 max-pool, four stages, pool, Linear.

    Each stage holds two BasicBlocks, 64, 128, 256 and 512 channels wide with strides 1, 2, 2
    and 2; a block's shortcut is a 1x1 conv + BN where its shape changes. With 1000 classes
    and 3 input channels it has torchvision's 11,689,512 parameters.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        image_size: tuple[int, int] = (224, 224),
    ) -> None:
        super().__init__()
        num_classes, in_channels, (height, width) = common_args(
            num_classes, in_channels, image_size
        )
        if min(height, width) < _MIN_SIDE:
            raise GradleakError(
                f"resnet18 needs images of at least {_MIN_SIDE}×{_MIN_SIDE} pixels, got "
                f"{height}×{width}; use a larger --image-size or a CIFAR resnet (resnet20)"
            )
        # No conv bias: the BatchNorm right after it makes one redundant.
        self.conv1 = nn.Conv2d(in_channels, _STEM_WIDTH, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(_STEM_WIDTH)
        self.relu = nn.ReLU(inplace=False)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        channels = _STEM_WIDTH
        stages = []
        for out_channels, stride, count in zip(
            _STAGE_WIDTHS, _STAGE_STRIDES, _BLOCKS_PER_STAGE, strict=True
        ):
            blocks = []
            for index in range(count):
                blocks.append(BasicBlock(channels, out_channels, stride if index == 0 else 1))
                channels = out_channels
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)
        init_resnet_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.classifier(torch.flatten(self.pool(out), 1))
