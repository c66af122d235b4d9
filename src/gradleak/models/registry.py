"""Build models by name ("lenet", "convnet-32", "resnet20-4", "mlp-512", ...)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from gradleak.core.errors import GradleakError
from gradleak.models.cnn6 import CNN6
from gradleak.models.convnet import ConvNet
from gradleak.models.lenet import LeNet
from gradleak.models.mlp import MLP
from gradleak.models.resnet import ResNet
from gradleak.models.resnet_imagenet import ResNet18

# A factory gets the regex match of the name plus (num_classes, in_channels, image_size).
_Factory = Callable[[re.Match[str], int, int, tuple[int, int]], nn.Module]


@dataclass(frozen=True)
class _Entry:
    pattern: re.Pattern[str]
    display: str
    factory: _Factory
    default: int | None = None  # value of the optional "-N" suffix when a name leaves it out


# Defaults of the optional suffixes, shared by the factories and canonical_model_name.
_CONVNET_WIDTH = 64
_MLP_WIDTH = 1024
_RESNET_K = 1


def _optional_int(match: re.Match[str], group: str, default: int) -> int:
    value = match.group(group)
    return default if value is None else int(value)


def _lenet(match: re.Match[str], classes: int, channels: int, size: tuple[int, int]) -> nn.Module:
    return LeNet(classes, channels, size)


def _cnn6(match: re.Match[str], classes: int, channels: int, size: tuple[int, int]) -> nn.Module:
    return CNN6(classes, channels, size)


def _convnet(match: re.Match[str], classes: int, channels: int, size: tuple[int, int]) -> nn.Module:
    return ConvNet(classes, channels, size, width=_optional_int(match, "width", _CONVNET_WIDTH))


def _mlp(match: re.Match[str], classes: int, channels: int, size: tuple[int, int]) -> nn.Module:
    width = _optional_int(match, "width", _MLP_WIDTH)
    return MLP(classes, channels, size, width=width, depth=_optional_int(match, "depth", 2))


def _resnet(match: re.Match[str], classes: int, channels: int, size: tuple[int, int]) -> nn.Module:
    return ResNet(
        classes,
        channels,
        size,
        depth=int(match.group("depth")),
        width_factor=_optional_int(match, "k", _RESNET_K),
    )


def _resnet18(
    match: re.Match[str], classes: int, channels: int, size: tuple[int, int]
) -> nn.Module:
    return ResNet18(classes, channels, size)


_TABLE: tuple[_Entry, ...] = (
    _Entry(re.compile(r"lenet"), "lenet", _lenet),
    _Entry(re.compile(r"cnn6"), "cnn6", _cnn6),
    _Entry(re.compile(r"convnet(?:-(?P<width>\d+))?"), "convnet[-W]", _convnet, _CONVNET_WIDTH),
    # mlpD-W: D hidden layers (default 2) of W units; the width stays the last group.
    _Entry(re.compile(r"mlp(?P<depth>\d+)?(?:-(?P<width>\d+))?"), "mlp[D][-W]", _mlp, _MLP_WIDTH),
    *(
        _Entry(
            re.compile(rf"resnet(?P<depth>{depth})(?:-(?P<k>\d+))?"),
            f"resnet{depth}[-K]",
            _resnet,
            _RESNET_K,
        )
        for depth in (20, 32, 56)
    ),
    _Entry(re.compile(r"resnet18"), "resnet18", _resnet18),
)


def available_models() -> list[str]:
    """The accepted name patterns, for help texts: W is a width, K a width factor.

    Returns:
        The patterns in lookup order: lenet, cnn6, convnet[-W], mlp[D][-W] (D hidden
        layers), resnet20[-K], resnet32[-K], resnet56[-K] and resnet18.
    """
    return [entry.display for entry in _TABLE]


def build_model(
    name: str,
    *,
    num_classes: int,
    in_channels: int = 3,
    image_size: tuple[int, int] = (32, 32),
    seed: int | None = 0,
) -> nn.Module:
    """Build the named model; a given seed fixes its initial parameters.

    With an integer seed the parameters are drawn from a forked RNG, so the caller's
    global random state is left untouched. seed=None draws from (and advances) the
    global RNG.

    Args:
        name: one of the patterns of `available_models` ("lenet", "convnet-32",
            "mlp3-256", "resnet20-4", ...); case and surrounding blanks are ignored.
        num_classes: number of output logits; an int >= 1.
        in_channels: channels of the input images; an int >= 1, default 3.
        image_size: (height, width) of the input images; default (32, 32). Some models
            need a minimum size (convnet 9×9, resnets 8×8, resnet18 64×64).
        seed: an int >= 0 fixing the initial parameters, or None for the global RNG;
            default 0.

    Returns:
        The model on the CPU, in train mode, mapping images B×C×H×W to logits
        B×num_classes.

    Raises:
        GradleakError: when `name` is not a string.
        GradleakError: when `name` matches no pattern of `available_models`.
        GradleakError: when `seed` is neither None nor an int >= 0.
        GradleakError: when the model refuses its arguments (see its class).
    """
    if not isinstance(name, str):
        raise GradleakError(f"model name must be a string, got {name!r}; pass e.g. 'lenet'")
    key = name.strip().lower()
    entry, match = _lookup(key)
    if entry is None or match is None:
        raise GradleakError(
            f"unknown model {name!r}; choose one of: {', '.join(available_models())}"
        )
    if seed is None:
        return entry.factory(match, num_classes, in_channels, image_size)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise GradleakError(f"seed must be a non-negative integer or None, got {seed!r}")
    # Models are built on the CPU, so only the CPU generator needs forking.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return entry.factory(match, num_classes, in_channels, image_size)


def canonical_model_name(name: str) -> str:
    """The name with its default suffix spelled out ("resnet20" → "resnet20-1"), for comparing.

    Names the registry does not know come back stripped and lower-cased.

    Args:
        name: a model name, e.g. "ResNet20" or "convnet-64".

    Returns:
        The name stripped and lower-cased, with the default width or width factor added
        where the pattern has one and the name leaves it out ("convnet" → "convnet-64",
        "mlp" → "mlp-1024"); names without such a suffix ("lenet") are only normalised.
    """
    key = name.strip().lower()
    entry, match = _lookup(key)
    if entry is None or match is None or entry.default is None:
        return key
    # The optional suffix is the pattern's last group ("width" or "k").
    suffix = match.group(match.re.groups)
    return f"{key.split('-')[0]}-{int(suffix) if suffix is not None else entry.default}"


def _lookup(key: str) -> tuple[_Entry | None, re.Match[str] | None]:
    for entry in _TABLE:
        match = entry.pattern.fullmatch(key)
        if match is not None:
            return entry, match
    return None, None


def classifier_layer(model: nn.Module) -> tuple[str, nn.Linear]:
    """Name and module of the model's last nn.Linear (its output layer).

    Args:
        model: any module; its submodules are searched in `named_modules` order.

    Returns:
        (name, layer): the qualified name of the last nn.Linear ("classifier" for every
        model of `build_model`; "" when `model` itself is the Linear) and that layer.

    Raises:
        GradleakError: when `model` holds no nn.Linear.
    """
    found: tuple[str, nn.Linear] | None = None
    for module_name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            found = (module_name, module)
    if found is None:
        raise GradleakError(
            f"{type(model).__name__} has no nn.Linear layer; label recovery from the last "
            "layer needs a model that ends in a Linear classifier"
        )
    return found
