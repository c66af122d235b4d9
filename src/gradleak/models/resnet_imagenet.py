"""The ImageNet ResNet-18 (He et al. 2016), layer for layer as torchvision builds it."""

from __future__ import annotations

import torch
from torch import nn

from gradleak.core.errors import GradleakError
from gradleak.models._checks import common_args
from gradleak.models.resnet import basic_stages, init_resnet_weights

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
    and 3 input channels it has torchvision's 11,689,512 parameters. Built by name as
    `resnet18` (`build_model`). It maps images B×C×H×W to logits B×num_classes; global
    average pooling makes it accept any image size of at least 64×64.

    Args:
        num_classes: number of output logits; an int >= 1.
        in_channels: channels of the input images; an int >= 1, default 3.
        image_size: (height, width) of the input images, each at least 64; default
            (224, 224).

    Raises:
        GradleakError: when `num_classes` or `in_channels` is not an int >= 1.
        GradleakError: when `image_size` is not a (height, width) pair of ints >= 1.
        GradleakError: when the image is smaller than 64×64.
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
        self.layer1, self.layer2, self.layer3, self.layer4 = basic_stages(
            _STEM_WIDTH, _STAGE_WIDTHS, _STAGE_STRIDES, _BLOCKS_PER_STAGE
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(_STAGE_WIDTHS[-1], num_classes)
        init_resnet_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.classifier(torch.flatten(self.pool(out), 1))
