"""The sigmoid LeNet used by "Deep Leakage from Gradients" (Zhu et al. 2019)."""

from __future__ import annotations

import torch
from torch import nn

from gradleak.models._checks import common_args

_KERNEL = 5
_PADDING = 2
_STRIDES = (2, 2, 1)
_CHANNELS = 12
# The DLG reference code draws every weight and bias from U(-0.5, 0.5); with PyTorch's
# default init the sigmoid network's gradients are too flat for the attack to converge.
_UNIFORM_BOUND = 0.5


def _conv_out(size: int, stride: int) -> int:
    return (size + 2 * _PADDING - _KERNEL) // stride + 1


class LeNet(nn.Module):
    """Three 5x5 conv layers (12 channels, strides 2, 2, 1) with sigmoids, then one Linear.

    With 3x32x32 input the classifier sees 12*8*8 = 768 features, with 1x28x28 it sees
    12*7*7 = 588. Sigmoid (not ReLU) keeps the network twice differentiable everywhere,
    which gradient matching relies on. Built by name as `lenet` (`build_model`). It maps
    images B×C×H×W of the given size to logits B×num_classes.

    Args:
        num_classes: number of output logits; an int >= 1.
        in_channels: channels of the input images; an int >= 1, default 3.
        image_size: (height, width) of the input images, which sizes the classifier;
            default (32, 32).
        uniform_init: draw every weight and bias from U(-0.5, 0.5), as the DLG reference
            code does; False keeps PyTorch's default initialisation. Default True.

    Raises:
        GradleakError: when `num_classes` or `in_channels` is not an int >= 1.
        GradleakError: when `image_size` is not a (height, width) pair of ints >= 1.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        image_size: tuple[int, int] = (32, 32),
        *,
        uniform_init: bool = True,
    ) -> None:
        super().__init__()
        num_classes, in_channels, (height, width) = common_args(
            num_classes, in_channels, image_size
        )
        layers: list[nn.Module] = []
        channels = in_channels
        for stride in _STRIDES:
            layers.append(nn.Conv2d(channels, _CHANNELS, _KERNEL, stride=stride, padding=_PADDING))
            layers.append(nn.Sigmoid())
            channels = _CHANNELS
            height, width = _conv_out(height, stride), _conv_out(width, stride)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(_CHANNELS * height * width, num_classes)
        if uniform_init:
            self._init_uniform()

    def _init_uniform(self) -> None:
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.uniform_(-_UNIFORM_BOUND, _UNIFORM_BOUND)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))
