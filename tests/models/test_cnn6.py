"""The CNN6 model: R-GAP-style conv stack without pooling."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gradleak.core.errors import GradleakError
from gradleak.models.cnn6 import CNN6


@pytest.mark.parametrize(
    ("channels", "size", "features"),
    [(3, (32, 32), 48 * 4 * 4), (1, (28, 28), 48 * 4 * 4), (3, (8, 8), 48)],
)
def test_classifier_inputs(channels: int, size: tuple[int, int], features: int) -> None:
    model = CNN6(10, channels, size)
    assert model.classifier.in_features == features
    assert model(torch.randn(2, channels, *size)).shape == (2, 10)


def test_architecture_has_no_pooling_and_invertible_activations() -> None:
    model = CNN6(10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.stride for c in convs] == [(2, 2), (2, 2), (1, 1), (1, 1), (2, 2), (1, 1)]
    assert [c.out_channels for c in convs] == [12, 24, 24, 24, 48, 48]
    acts = [m for m in model.modules() if isinstance(m, nn.LeakyReLU)]
    assert len(acts) == 6 and all(a.negative_slope == 0.2 for a in acts)
    assert not any(
        isinstance(m, (nn.MaxPool2d, nn.AvgPool2d, nn.BatchNorm2d)) for m in model.modules()
    )


def test_custom_widths() -> None:
    model = CNN6(10, 3, (16, 16), widths=(4, 4, 4, 4, 8, 8))
    assert model.classifier.in_features == 8 * 2 * 2


def test_bad_arguments_name_the_fix() -> None:
    with pytest.raises(GradleakError, match="widths"):
        CNN6(10, widths=(4, 4))
    with pytest.raises(GradleakError, match="too small"):
        CNN6(10, 3, (1, 1))
    with pytest.raises(GradleakError, match="num_classes"):
        CNN6(0)
