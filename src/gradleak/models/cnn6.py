"""A six-convolution network without pooling, in the style of R-GAP's CNN6 (Zhu & Blaschko 2021)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from gradleak.core.errors import GradleakError
from gradleak.models._checks import common_args, positive_int

# (out_channels, kernel, stride, padding) per convolution. With 3x32x32 input the sizes go
# 32 -> 16 -> 8 -> 8 -> 8 -> 4 -> 4. Every layer sees at least as many equations (forward
# outputs plus weight gradients) as it has unknown inputs, the condition R-GAP's rank
# analysis asks for; the stride-2 layers are where the forward pass alone loses information.
_LAYERS: tuple[tuple[int, int, int, int], ...] = (
    (12, 4, 2, 1),
    (24, 3, 2, 1),
    (24, 3, 1, 1),
    (24, 3, 1, 1),
    (48, 3, 2, 1),
    (48, 3, 1, 1),
)
# R-GAP uses LeakyReLU; its slope keeps the activation a bijection, so a layer's
# pre-activation (and derivative) follows exactly from its output.
_NEGATIVE_SLOPE = 0.2


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


class CNN6(nn.Module):
    """Six conv layers with LeakyReLU(0.2) and no pooling, then one Linear classifier.

    Built by name as `cnn6` (`build_model`). The convolutions have kernels 4, 3, 3, 3, 3, 3,
    strides 2, 2, 1, 1, 2, 1 and padding 1, with biases; the classifier takes the flattened
    last feature map (48×4×4 = 768 features for 32×32 images). It maps images B×C×H×W of
    the given size to logits B×num_classes.

    Args:
        num_classes: number of output logits; an int >= 1.
        in_channels: channels of the input images; an int >= 1, default 3.
        image_size: (height, width) of the input images, which sizes the classifier;
            default (32, 32).
        widths: the output channels of the six convolutions, each an int >= 1; default
            None, meaning 12, 24, 24, 24, 48, 48.

    Raises:
        GradleakError: when `num_classes` or `in_channels` is not an int >= 1.
        GradleakError: when `image_size` is not a (height, width) pair of ints >= 1.
        GradleakError: when `widths` does not hold six entries.
        GradleakError: when an entry of `widths` is not a positive int.
        GradleakError: when the image is too small for the strided convolutions.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        image_size: tuple[int, int] = (32, 32),
        *,
        widths: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        num_classes, in_channels, (height, width) = common_args(
            num_classes, in_channels, image_size
        )
        if widths is None:
            widths = [spec[0] for spec in _LAYERS]
        if len(widths) != len(_LAYERS):
            raise GradleakError(
                f"CNN6 has {len(_LAYERS)} conv layers but {len(widths)} widths were given; "
                f"pass {len(_LAYERS)} channel counts"
            )
        layers: list[nn.Module] = []
        channels = in_channels
        for out, (_, kernel, stride, padding) in zip(widths, _LAYERS, strict=True):
            out = positive_int("CNN6 width", out)
            layers.append(nn.Conv2d(channels, out, kernel, stride=stride, padding=padding))
            layers.append(nn.LeakyReLU(_NEGATIVE_SLOPE))
            channels = out
            height = _conv_out(height, kernel, stride, padding)
            width = _conv_out(width, kernel, stride, padding)
            if height < 1 or width < 1:
                raise GradleakError(
                    f"image_size {tuple(image_size)} is too small for CNN6's strided convolutions; "
                    "use images of at least 8x8 pixels"
                )
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(channels * height * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))
