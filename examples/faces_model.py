"""A small face classifier, defined outside gradleak, to audit as your own model.

    gradleak attack --model examples/faces_model.py:make_model --model-arg width=8 \\
        --dataset folder --data-root ../shared/data/lfw --attack idlg

gradleak imports this file, calls `make_model` with the `--model-arg` values as keyword
arguments and reads what it needs from the model: the channels from its first layer, the
image size by running it (32×32 by default, so folder images are resized to 32), the
classes from the width of its logits. Nothing here knows about gradleak.
"""

from __future__ import annotations

from torch import nn

# The nonlinearities and the poolings the factory offers, by name.
ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}
POOLINGS = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}
# Each of the two stages halves each side.
_STAGES = 2


def make_model(
    num_classes: int = 30,
    width: int = 16,
    image_size: int = 32,
    in_channels: int = 3,
    activation: str = "relu",
    pooling: str = "max",
    with_batchnorm: bool = False,
) -> nn.Module:
    """Two conv-activation-pool stages and a Linear classifier.

    With the defaults (30 classes, width 16, 3×32×32 faces) it has 75,518 parameters
    (width 8: 34,574).

    Args:
        num_classes: people to tell apart (LFW's 30-person sample: 30).
        width: channels of the first 5×5 convolution; the second has twice as many.
        image_size: side of the square images it takes; a multiple of 4.
        in_channels: 3 for RGB, 1 for grey images.
        activation: relu, sigmoid or tanh.
        pooling: max or avg (2×2).
        with_batchnorm: a BatchNorm2d after each convolution.

    Returns:
        The model, mapping images B×in_channels×image_size×image_size to logits
        B×num_classes.

    Raises:
        ValueError: an unknown activation or pooling, or an image size that is not a
            multiple of 4.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {sorted(POOLINGS)}, got {pooling!r}")
    shrink = 2**_STAGES
    if image_size % shrink:
        raise ValueError(f"image_size must be a multiple of {shrink}, got {image_size}")
    layers: list[nn.Module] = []
    channels = in_channels
    for stage in range(_STAGES):
        out_channels = width * 2**stage
        layers.append(nn.Conv2d(channels, out_channels, 5, padding=2))
        if with_batchnorm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers += [ACTIVATIONS[activation](), POOLINGS[pooling](2)]
        channels = out_channels
    side = image_size // shrink
    layers += [nn.Flatten(), nn.Linear(channels * side * side, num_classes)]
    return nn.Sequential(*layers)
