"""A fully connected network whose first layer is a biased Linear."""

from __future__ import annotations

import torch
from torch import nn

from gradleak.core.errors import GradleakError
from gradleak.models._checks import common_args, positive_int


class MLP(nn.Module):
    """Flatten, `depth` hidden Linear + ReLU layers of `width` units, then a Linear classifier.

    The first layer is always a Linear with bias: analytic attacks recover its input
    exactly from the ratio of its weight and bias gradients. depth=0 gives a plain
    linear (softmax regression) model. Built by name as `mlp[D][-W]` (`build_model`,
    D = 2 and W = 1024 by default). It maps images B×C×H×W of the given size to logits
    B×num_classes.

    Args:
        num_classes: number of output logits; an int >= 1.
        in_channels: channels of the input images; an int >= 1, default 3.
        image_size: (height, width) of the input images, which sizes the first layer
            (C·H·W inputs); default (32, 32).
        width: units of each hidden layer; an int >= 1, default 1024 (checked even for
            depth 0).
        depth: number of hidden layers; an int >= 0, default 2.

    Raises:
        GradleakError: when `num_classes` or `in_channels` is not an int >= 1.
        GradleakError: when `image_size` is not a (height, width) pair of ints >= 1.
        GradleakError: when `width` is not a positive int.
        GradleakError: when `depth` is not a non-negative int.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        image_size: tuple[int, int] = (32, 32),
        *,
        width: int = 1024,
        depth: int = 2,
    ) -> None:
        super().__init__()
        num_classes, in_channels, (height, width_px) = common_args(
            num_classes, in_channels, image_size
        )
        width = positive_int("mlp width", width)
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
            raise GradleakError(
                f"mlp depth must be a non-negative integer, got {depth!r}; pass e.g. 2"
            )
        features = in_channels * height * width_px
        layers: list[nn.Module] = [nn.Flatten()]
        for _ in range(depth):
            layers.append(nn.Linear(features, width, bias=True))
            layers.append(nn.ReLU(inplace=False))
            features = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(features, num_classes, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
