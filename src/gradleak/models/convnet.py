"""The plain ConvNet used in "Inverting Gradients" (Geiping et al. 2020)."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from gradleak.core.errors import GradleakError
from gradleak.models._checks import common_args, positive_int

# Width multiples of each conv layer; "pool" marks a 3x3 max-pool.
_PLAN: tuple[int | str, ...] = (1, 2, 2, 4, 4, 4, "pool", 4, 4, 4, "pool")
_POOL = 3
# After two 3x3 pools a 32x32 image is 3x3; pooling adaptively to 3x3 keeps the CIFAR
# layer shapes of the paper exactly and lets other image sizes share the same classifier.
_FINAL_GRID = 3
_MIN_SIZE = _POOL * _POOL


class ConvNet(nn.Module):
    """Nine 3x3 conv + BatchNorm + ReLU layers with two max-pools, then a Linear.

    Layers, for width w:
    conv0 (w), conv1 (2w), conv2 (2w), conv3 (4w), conv4 (4w), conv5 (4w), pool0 (3x3),
    conv6 (4w), conv7 (4w), conv8 (4w), pool1 (3x3), adaptive average pool to 3x3,
    flatten, classifier Linear(4w*9 -> num_classes).
    Each convN is followed by bnN and reluN. Built by name as `convnet[-W]` (`build_model`,
    W = 64 by default). It maps images B×C×H×W to logits B×num_classes; the adaptive pool
    makes it accept any image size of at least 9×9.

    Args:
        num_classes: number of output logits; an int >= 1.
        in_channels: channels of the input images; an int >= 1, default 3.
        image_size: (height, width) of the input images, each at least 9; default (32, 32).
        width: w, the channels of the first convolution; an int >= 1, default 64.

    Raises:
        GradleakError: when `num_classes` or `in_channels` is not an int >= 1.
        GradleakError: when `image_size` is not a (height, width) pair of ints >= 1.
        GradleakError: when `width` is not a positive int.
        GradleakError: when the image is smaller than 9×9.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        image_size: tuple[int, int] = (32, 32),
        *,
        width: int = 64,
    ) -> None:
        super().__init__()
        num_classes, in_channels, (height, width_px) = common_args(
            num_classes, in_channels, image_size
        )
        width = positive_int("convnet width", width)
        if min(height, width_px) < _MIN_SIZE:
            raise GradleakError(
                f"ConvNet needs images of at least {_MIN_SIZE}x{_MIN_SIZE} for its two "
                f"{_POOL}x{_POOL} max-pools, got {height}x{width_px}; use a larger image "
                "or another model"
            )
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        channels = in_channels
        conv_index = pool_index = 0
        for step in _PLAN:
            if step == "pool":
                layers[f"pool{pool_index}"] = nn.MaxPool2d(_POOL)
                pool_index += 1
                continue
            out_channels = int(step) * width
            # No conv bias: the BatchNorm shift right after it makes one redundant.
            layers[f"conv{conv_index}"] = nn.Conv2d(
                channels, out_channels, 3, padding=1, bias=False
            )
            layers[f"bn{conv_index}"] = nn.BatchNorm2d(out_channels)
            layers[f"relu{conv_index}"] = nn.ReLU(inplace=False)
            channels = out_channels
            conv_index += 1
        layers["avgpool"] = nn.AdaptiveAvgPool2d(_FINAL_GRID)
        self.features = nn.Sequential(layers)
        self.classifier = nn.Linear(channels * _FINAL_GRID * _FINAL_GRID, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))
