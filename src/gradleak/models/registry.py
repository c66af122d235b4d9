"""Build models by name ("lenet", "convnet-32", "resnet20-4", "mlp-512", ...) or from the
user's own factory ("mypkg.models:make_net", "models/net.py:make_net": `models/user.py`)."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from gradleak.core.device import physical_memory
from gradleak.core.errors import GradleakError
from gradleak.models.cnn6 import CNN6
from gradleak.models.convnet import ConvNet
from gradleak.models.lenet import LeNet
from gradleak.models.mlp import MLP
from gradleak.models.resnet import ResNet
from gradleak.models.resnet_imagenet import ResNet18
from gradleak.models.user import (
    build_user_model,
    check_input_shape,
    check_model_args,
    is_factory_spec,
)

# A factory gets the name's parameters (its optional parts filled with their defaults) plus
# (num_classes, in_channels, image_size).
_Params = Mapping[str, int]
_Factory = Callable[[_Params, int, int, tuple[int, int]], nn.Module]


@dataclass(frozen=True)
class _Entry:
    """One family of names: its pattern, its defaults and its one canonical spelling.

    Every named group of `pattern` is an integer parameter; a group the name leaves out
    takes its value from `defaults`. `canonical` spells the parameters out in full, so
    that every spelling of one architecture ("mlp", "mlp2", "mlp-1024") has one name.
    """

    pattern: re.Pattern[str]
    display: str
    factory: _Factory
    canonical: str
    defaults: Mapping[str, int] = field(default_factory=dict)

    def params(self, match: re.Match[str]) -> dict[str, int]:
        return {
            group: self.defaults[group] if value is None else int(value)
            for group, value in match.groupdict().items()
        }


# Defaults of the optional parts of names, shared by the factories and canonical_model_name.
_CONVNET_WIDTH = 64
_MLP_WIDTH = 1024
_MLP_DEPTH = 2
_RESNET_K = 1


def _lenet(params: _Params, classes: int, channels: int, size: tuple[int, int]) -> nn.Module:
    return LeNet(classes, channels, size)


def _cnn6(params: _Params, classes: int, channels: int, size: tuple[int, int]) -> nn.Module:
    return CNN6(classes, channels, size)


def _convnet(params: _Params, classes: int, channels: int, size: tuple[int, int]) -> nn.Module:
    return ConvNet(classes, channels, size, width=params["width"])


def _mlp(params: _Params, classes: int, channels: int, size: tuple[int, int]) -> nn.Module:
    return MLP(classes, channels, size, width=params["width"], depth=params["depth"])


def _resnet(params: _Params, classes: int, channels: int, size: tuple[int, int]) -> nn.Module:
    return ResNet(classes, channels, size, depth=params["depth"], width_factor=params["k"])


def _resnet18(params: _Params, classes: int, channels: int, size: tuple[int, int]) -> nn.Module:
    return ResNet18(classes, channels, size)


_TABLE: tuple[_Entry, ...] = (
    _Entry(re.compile(r"lenet"), "lenet", _lenet, "lenet"),
    _Entry(re.compile(r"cnn6"), "cnn6", _cnn6, "cnn6"),
    _Entry(
        re.compile(r"convnet(?:-(?P<width>\d+))?"),
        "convnet[-W]",
        _convnet,
        "convnet-{width}",
        {"width": _CONVNET_WIDTH},
    ),
    # mlpD-W: D hidden layers of W units.
    _Entry(
        re.compile(r"mlp(?P<depth>\d+)?(?:-(?P<width>\d+))?"),
        "mlp[D][-W]",
        _mlp,
        "mlp{depth}-{width}",
        {"depth": _MLP_DEPTH, "width": _MLP_WIDTH},
    ),
    *(
        _Entry(
            re.compile(rf"resnet(?P<depth>{depth})(?:-(?P<k>\d+))?"),
            f"resnet{depth}[-K]",
            _resnet,
            "resnet{depth}-{k}",
            {"k": _RESNET_K},
        )
        for depth in (20, 32, 56)
    ),
    _Entry(re.compile(r"resnet18"), "resnet18", _resnet18, "resnet18"),
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
    model_args: Mapping[str, Any] | None = None,
) -> nn.Module:
    """Build the named model; a given seed fixes its initial parameters.

    With an integer seed the parameters are drawn from a forked RNG, so the caller's
    global random state is left untouched. seed=None draws from (and advances) the
    global RNG.

    A factory spec (`MODULE:FACTORY`, `FILE.py:FACTORY`) builds the user's own model
    (`models/user.py`): the factory is called with `model_args` and decides its own
    classes, channels and size, so `num_classes` is not used; the model must take images
    of `in_channels` × `image_size` and give class logits. Callers that need its classes
    read them from the model (`models.user.describe_model`).

    Args:
        name: one of the patterns of `available_models` ("lenet", "convnet-32",
            "mlp3-256", "resnet20-4", ...); case and surrounding blanks are ignored. Or a
            factory spec: "package.module:factory" or "path/to/file.py:factory".
        num_classes: number of output logits; an int >= 1 (a factory decides its own).
        in_channels: channels of the input images; an int >= 1, default 3.
        image_size: (height, width) of the input images; default (32, 32). Some models
            need a minimum size (convnet 9×9, resnets 8×8, resnet18 64×64).
        seed: an int >= 0 fixing the initial parameters, or None for the global RNG;
            default 0.
        model_args: keyword arguments of a factory; a registry model takes none.

    Returns:
        The model on the CPU, in train mode, mapping images B×C×H×W to logits
        B×num_classes.

    Raises:
        GradleakError: when `name` is not a string.
        GradleakError: when `name` matches no pattern of `available_models`.
        GradleakError: when `seed` is neither None nor an int >= 0.
        GradleakError: when the model refuses its arguments (see its class).
        GradleakError: when the model and one update of it would not fit in this
            machine's memory (e.g. an mlp on very large images).
        GradleakError: for a factory, see `models.user.build_user_model` and
            `models.user.check_input_shape`.
        GradleakError: when `model_args` are given for a registry model.
    """
    if not isinstance(name, str):
        raise GradleakError(f"model name must be a string, got {name!r}; pass e.g. 'lenet'")
    if is_factory_spec(name):
        model = build_user_model(name, model_args, seed=seed)
        check_input_shape(model, in_channels, image_size, name=name.strip())
        return model
    check_model_args(name, model_args)  # a registry model takes none
    key = name.strip().lower()
    entry, match = _lookup(key)
    if entry is None or match is None:
        raise GradleakError(
            f"unknown model {name!r}; choose one of: {', '.join(available_models())}"
        )
    params = entry.params(match)
    _check_memory(
        entry.canonical.format(**params),
        lambda: entry.factory(params, num_classes, in_channels, image_size),
    )
    if seed is None:
        with torch.device("cpu"):
            return entry.factory(params, num_classes, in_channels, image_size)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise GradleakError(f"seed must be a non-negative integer or None, got {seed!r}")
    # Models are built on the CPU whatever torch's default device (callers move them), so
    # a seed draws the same weights everywhere and only the CPU generator needs forking.
    with torch.random.fork_rng(devices=[]), torch.device("cpu"):
        torch.manual_seed(seed)
        return entry.factory(params, num_classes, in_channels, image_size)


class _NoInitialisation(TorchFunctionMode):
    """Skip the in-place fills of weight initialisation (normal_, uniform_, zero_, ...).

    On the meta device they compute nothing, but the first meta `normal_` (Kaiming-normal
    convolutions) loads torch's Python decompositions and compiler stack, about a second
    of imports, for a shape count that in-place fills cannot change.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        name = getattr(func, "__name__", "")
        in_place = name.endswith("_") and not name.startswith("_") and name not in _SHAPING
        if in_place and args and isinstance(args[0], torch.Tensor) and args[0].is_meta:
            return args[0]
        return func(*args, **(kwargs or {}))


# In-place operations that change a tensor's size: never skipped.
_SHAPING = frozenset({"resize_", "resize_as_", "set_", "requires_grad_"})


def _check_memory(name: str, build: Callable[[], nn.Module]) -> None:
    """Refuse a model that, with one update of the same size, exceeds the machine's memory.

    The model is first built on the meta device, which allocates nothing and draws no
    random numbers, so an absurd width or image size fails here in one line instead of
    as a MemoryError (or the system killing the process) while its weights are drawn.
    """
    memory = physical_memory()
    if memory is None:
        return
    with torch.device("meta"), _NoInitialisation():
        shape = build()
    tensors = itertools.chain(shape.parameters(), shape.buffers())
    size = sum(t.numel() * t.element_size() for t in tensors)
    if 2 * size > memory:
        count = sum(p.numel() for p in shape.parameters())
        raise GradleakError(
            f"model {name} has {count} parameters ({size / 2**30:.1f} GiB); with one update "
            f"of the same size it needs more than this machine's {memory / 2**30:.1f} GiB of "
            "memory: use smaller images or a narrower model"
        )


def canonical_model_name(name: str) -> str:
    """The one spelling of the architecture `name` builds, for comparing and recording names.

    Every optional part is spelled out with its default ("resnet20" → "resnet20-1",
    "convnet" → "convnet-64", "mlp" and "mlp2" → "mlp2-1024"), so two names build the same
    architecture exactly when their canonical names are equal. A factory spec is its own
    canonical name, stripped but not lower-cased (module paths are case-sensitive). Other
    names the registry does not know come back stripped and lower-cased.

    Args:
        name: a model name, e.g. "ResNet20" or "mlp-512".

    Returns:
        The canonical name ("lenet", "convnet-64", "mlp2-512", "resnet20-1", ...).
    """
    if is_factory_spec(name):
        return name.strip()
    key = name.strip().lower()
    entry, match = _lookup(key)
    if entry is None or match is None:
        return key
    return entry.canonical.format(**entry.params(match))


def is_model_name(name: object) -> bool:
    """Whether `build_model` knows `name` (any spelling: case and blanks are ignored).

    A well-formed factory spec counts without being imported: whether it imports and
    builds is found when the model is built.

    Args:
        name: anything; only strings can be model names.

    Returns:
        True when `name` matches one of the patterns of `available_models`, or is a
        factory spec (`MODULE:FACTORY`, `FILE.py:FACTORY`).
    """
    if is_factory_spec(name):
        return True
    return isinstance(name, str) and _lookup(name.strip().lower())[0] is not None


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
