"""The user's own models: `package.module:factory` or `path/to/file.py:factory`.

A factory spec names a callable that returns an `nn.Module` mapping images B×C×H×W to class
logits B×K. It is built with keyword arguments (`--model-arg key=value`) on the CPU, from a
forked RNG seeded by the run's seed, so the same seed gives the same weights. The factory
decides its own classes, channels and image size; what the rest of gradleak needs of them
is read from the built model (`describe_model`): the channels from its first Conv2d or
Linear layer, the image size by running a forward pass (`probe_input_shape`), the classes
from the width of its logits, and whether it holds batch norm.

Importing the module, or running the file, is running the user's own code: it happens only
when the model is built, never when a spec is merely checked for its form
(`is_factory_spec`). Every way the import, the call or the model can fail is one line.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import keyword
import math
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import yaml
from torch import nn

from gradleak.core.errors import GradleakError

FILE_SUFFIX = ".py"
# Square image sides tried, in order, after the data's own size when a model's first layer
# is a convolution (which does not fix the size): the usual datasets' sides first.
COMMON_SIDES = (32, 28, 64, 224, 96, 128, 48, 256, 16, 112, 160, 8)
# Channels tried for a model whose first layer is a Linear, after the data's own.
COMMON_CHANNELS = (3, 1)
# The batch the output is checked with: 2 tells a batch axis from a squeezed one.
_CHECK_BATCH = 2
# How many of a module's callables a message about a missing factory names.
_SHOWN_NAMES = 5
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_SCALARS = (bool, int, float, str, type(None))


@dataclass(frozen=True)
class FactorySpec:
    """A parsed `module:factory` or `file.py:factory` spec.

    Attributes:
        spec: the spec as given, stripped of surrounding blanks.
        source: the dotted module name, or the path of the Python file.
        attribute: the factory's name in it (dotted for a nested one: `Class.create`).
        is_file: whether `source` is a file path rather than a module name.
    """

    spec: str
    source: str
    attribute: str
    is_file: bool

    @property
    def label(self) -> str:
        """A short, file-system-safe name for folders and tables: `stem.factory`."""
        stem = Path(self.source).stem if self.is_file else self.source.rpartition(".")[2]
        return re.sub(r"[^A-Za-z0-9_.+-]", "-", f"{stem}.{self.attribute}")


@dataclass(frozen=True)
class ModelShape:
    """What a model takes and gives, read from the built model.

    Attributes:
        channels: channels of the images it takes.
        image_size: (height, width) of the images it takes.
        num_classes: the width of its logits.
        batch_norm: whether it holds batch-norm layers.
    """

    channels: int
    image_size: tuple[int, int]
    num_classes: int
    batch_norm: bool

    @property
    def input(self) -> str:
        """The input shape as messages spell it: C×H×W."""
        return _spell(self.channels, self.image_size)


# --- the spec ---------------------------------------------------------------------------


def _dotted(text: str) -> bool:
    parts = text.split(".")
    return all(part.isidentifier() and not keyword.iskeyword(part) for part in parts)


def _parse(name: object) -> FactorySpec | None:
    if not isinstance(name, str):
        return None
    spec = name.strip()
    source, colon, attribute = spec.rpartition(":")
    source = source.strip()
    if not colon or not source or not _dotted(attribute):
        return None
    if source.endswith(FILE_SUFFIX) and len(source) > len(FILE_SUFFIX):
        return FactorySpec(spec, source, attribute, is_file=True)
    if _dotted(source):
        return FactorySpec(spec, source, attribute, is_file=False)
    return None


def is_factory_spec(name: object) -> bool:
    """Whether `name` is a well-formed factory spec; nothing is imported.

    Args:
        name: anything; only strings can be specs.

    Returns:
        True for `package.module:factory` (dotted Python names) and `path/to/file.py:factory`.
    """
    return _parse(name) is not None


def parse_factory_spec(name: str) -> FactorySpec:
    """Parse a factory spec without importing it.

    Args:
        name: `package.module:factory` or `path/to/file.py:factory`.

    Returns:
        The parsed spec.

    Raises:
        GradleakError: when `name` is not of either form.
    """
    parsed = _parse(name)
    if parsed is None:
        raise GradleakError(
            f"{name!r} is not a model factory; write MODULE:FACTORY (e.g. mypkg.models:make_net) "
            "or FILE.py:FACTORY (e.g. models/net.py:make_net)"
        )
    return parsed


def model_label(name: str) -> str:
    """How folder names and tables name a model: `stem.factory` for a factory spec, else
    `name` itself."""
    parsed = _parse(name)
    return name if parsed is None else parsed.label


# --- the factory's arguments ------------------------------------------------------------


def parse_model_arg(text: str) -> tuple[str, Any]:
    """'width=16' → ('width', 16): one `--model-arg`, its value read as a YAML scalar.

    Numbers become int or float (1e-3 too), true/false a bool, null None, anything else
    the string itself.

    Args:
        text: KEY=VALUE; KEY a Python identifier.

    Returns:
        (key, value).

    Raises:
        GradleakError: no '=', a key that is not an identifier, an empty value, or a value
            that is a list or mapping rather than a scalar.
    """
    key, equals, raw = text.partition("=")
    key = key.strip()
    if not equals:
        raise GradleakError(f"--model-arg {text!r} is not KEY=VALUE; write e.g. width=16")
    if not key.isidentifier() or keyword.iskeyword(key):
        raise GradleakError(
            f"--model-arg {text!r}: {key!r} is not a keyword argument name; write KEY=VALUE "
            "with KEY a Python identifier, e.g. width=16"
        )
    raw = raw.strip()
    if not raw:
        raise GradleakError(f"--model-arg {text!r} has no value; write e.g. {key}=16")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str) and _NUMBER.fullmatch(raw):
        value = float(raw)  # YAML 1.1 reads 1e-3 as a string
    if isinstance(value, list | dict):
        raise GradleakError(
            f"--model-arg {text!r}: the value is a list or mapping; give a number, true/false, "
            "null or a word (lists go in a config file's model_args)"
        )
    if not isinstance(value, _SCALARS):  # dates and the like: the text as written
        value = raw
    return key, value


def model_args_from(pairs: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """The keyword arguments of repeated `--model-arg` flags; a key given twice is an error.

    Args:
        pairs: (key, value) pairs from `parse_model_arg`.

    Returns:
        key → value, in the order given.

    Raises:
        GradleakError: a key given twice.
    """
    args: dict[str, Any] = {}
    for key, value in pairs:
        if key in args:
            raise GradleakError(
                f"--model-arg {key} is given twice ({args[key]!r} and {value!r}); keep one"
            )
        args[key] = value
    return args


def check_model_args(name: str, args: Mapping[str, Any] | None) -> dict[str, Any]:
    """Refuse arguments that no factory call could take; nothing is imported.

    Args:
        name: the model: a factory spec, or a registry name (which takes no arguments).
        args: the keyword arguments (None or empty: none).

    Returns:
        The arguments as a plain dict.

    Raises:
        GradleakError: arguments for a registry model, a key that is not an identifier, or
            a value that is not plain data (numbers, strings, booleans, null, lists and
            mappings of them).
    """
    args = dict(args or {})
    if not args:
        return args
    if not is_factory_spec(name):
        key = next(iter(args))
        raise GradleakError(
            f"model_args ({key}=...) are arguments of a model factory, but {name!r} is a "
            "built-in model; drop --model-arg or name your factory as MODULE:FACTORY"
        )
    for key, value in args.items():
        if not isinstance(key, str) or not key.isidentifier() or keyword.iskeyword(key):
            raise GradleakError(
                f"model_args key {key!r} is not a keyword argument name; use a Python "
                "identifier such as width"
            )
        if not _plain(value):
            raise GradleakError(
                f"model_args {key} is a {type(value).__name__}; give numbers, strings, "
                "booleans, null, or lists and mappings of them"
            )
    return args


def _plain(value: object) -> bool:
    if isinstance(value, _SCALARS):
        return not (isinstance(value, float) and math.isnan(value))
    if isinstance(value, list | tuple):
        return all(_plain(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


# --- importing and calling the factory ---------------------------------------------------


def factory_source_digest(name: str) -> str | None:
    """A digest of the code a factory spec names, so an edited model is a new setting.

    A file spec digests the file's bytes; a module spec the file of its module where
    `importlib` finds one without importing it (a top-level module; for a dotted one only
    its parent packages are imported, as any import of it would).

    Args:
        name: a factory spec.

    Returns:
        The SHA-256 hex digest of the source, or None where it cannot be read (building
        the model then fails with its own one-line error).
    """
    spec = parse_factory_spec(name)
    if spec.is_file:
        path: str | None = spec.source
    else:
        try:
            found = importlib.util.find_spec(spec.source)
        except (ImportError, ValueError):
            return None
        path = None if found is None else found.origin
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest() if path else None
    except OSError:
        return None


def load_factory(name: str) -> Callable[..., Any]:
    """Import the module (or run the file) a spec names and return its factory.

    Module names are looked up on `sys.path`, to which the current folder is added (last,
    so installed packages win), as running `python -m` from it would. A file is run once
    per content: building the same spec again reuses the module.

    Args:
        name: `package.module:factory` or `path/to/file.py:factory`.

    Returns:
        The callable.

    Raises:
        GradleakError: a malformed spec, a module that does not import or a file that does
            not run (naming it and the error), a missing attribute, or one that is not
            callable.
    """
    spec = parse_factory_spec(name)
    module = _run_file(spec) if spec.is_file else _import(spec)
    found: Any = module
    for part in spec.attribute.split("."):
        if not hasattr(found, part):
            where = spec.source if found is module else f"{spec.source}:{spec.attribute}"
            raise GradleakError(
                f"{where} has no attribute {part!r} (--model {spec.spec}); {_callables(module)}"
            )
        found = getattr(found, part)
    if not callable(found):
        raise GradleakError(
            f"{spec.attribute!r} in {spec.source} is of type {type(found).__name__}, not callable; "
            "--model needs a function or class that returns an nn.Module"
        )
    return found


def _callables(module: ModuleType) -> str:
    names = [
        n
        for n, v in vars(module).items()
        if not n.startswith("_")
        and callable(v)
        and getattr(v, "__module__", None) == module.__name__
    ]
    if not names:
        return "it defines no public function or class"
    shown = ", ".join(sorted(names)[:_SHOWN_NAMES])
    more = f" (+{len(names) - _SHOWN_NAMES} more)" if len(names) > _SHOWN_NAMES else ""
    return f"it defines: {shown}{more}"


def _import(spec: FactorySpec) -> ModuleType:
    here = os.getcwd()
    if here not in sys.path and "" not in sys.path:
        sys.path.append(here)
    try:
        return importlib.import_module(spec.source)
    except ImportError as exc:
        raise GradleakError(
            f"cannot import module {spec.source!r} (--model {spec.spec}): {_first_line(exc)}; "
            "check the name, run from the folder that holds it or install it"
        ) from exc
    except Exception as exc:  # the module's own code failed: reported, not hidden
        raise GradleakError(
            f"importing module {spec.source!r} (--model {spec.spec}) failed: "
            f"{type(exc).__name__}: {_first_line(exc)}"
        ) from exc


def _run_file(spec: FactorySpec) -> ModuleType:
    path = Path(spec.source).expanduser()
    if path.is_dir():
        raise GradleakError(f"model file {path} is a folder; give a Python file: FILE.py:FACTORY")
    if not path.is_file():
        raise GradleakError(
            f"model file not found: {path} (--model {spec.spec}); give the path of a Python file"
        )
    resolved = path.resolve()
    stat = resolved.stat()
    # One module per file and content: a changed file is run afresh, an unchanged one reused.
    key = f"{resolved}|{stat.st_mtime_ns}|{stat.st_size}".encode()
    stem = re.sub(r"\W", "_", resolved.stem)
    module_name = f"_gradleak_user_{stem}_{hashlib.sha256(key).hexdigest()[:12]}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    loader_spec = importlib.util.spec_from_file_location(module_name, resolved)
    if loader_spec is None or loader_spec.loader is None:
        raise GradleakError(f"model file {path} cannot be loaded as Python; give a .py file")
    module = importlib.util.module_from_spec(loader_spec)
    # Registered before running, as an import would, so the file's dataclasses and
    # relative look-ups of its own module work.
    sys.modules[module_name] = module
    try:
        loader_spec.loader.exec_module(module)
    except BaseException as exc:
        del sys.modules[module_name]
        if not isinstance(exc, Exception):
            raise
        raise GradleakError(
            f"running model file {path} (--model {spec.spec}) failed: "
            f"{type(exc).__name__}: {_first_line(exc)}"
        ) from exc
    return module


def build_user_model(
    name: str, model_args: Mapping[str, Any] | None = None, *, seed: int | None = 0
) -> nn.Module:
    """Import a factory, call it with `model_args` and check that it returns a module.

    With an integer seed the factory draws from a forked CPU RNG seeded with it, so the
    same seed gives the same weights and the caller's random state is left untouched;
    None draws from (and advances) the global RNG.

    Args:
        name: `package.module:factory` or `path/to/file.py:factory`.
        model_args: keyword arguments of the factory (None: none).
        seed: an int >= 0, or None.

    Returns:
        The factory's model, on the CPU.

    Raises:
        GradleakError: any failure of `load_factory`, arguments the factory does not take
            (naming those it takes), a factory that raises (naming it and the exception), or
            one that returns anything but an nn.Module.
    """
    args = check_model_args(name, model_args)
    spec = parse_factory_spec(name)
    factory = load_factory(spec.spec)
    _check_signature(spec, factory, args)
    # Built on the CPU whatever torch's default device is, as `build_model` builds, so the
    # same seed gives the same weights on every machine.
    if seed is None:
        with torch.device("cpu"):
            model = _call(spec, factory, args)
    else:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise GradleakError(f"seed must be a non-negative integer or None, got {seed!r}")
        # Models are built on the CPU, so only the CPU generator needs forking.
        with torch.random.fork_rng(devices=[]), torch.device("cpu"):
            torch.manual_seed(seed)
            model = _call(spec, factory, args)
    if not isinstance(model, nn.Module):
        raise GradleakError(
            f"model factory {spec.spec} returned a value of type {type(model).__name__}, not a "
            "torch nn.Module; return the model itself"
        )
    # Like every model gradleak builds, it starts on the CPU; runs place it themselves.
    return model.cpu()


def _check_signature(spec: FactorySpec, factory: Callable[..., Any], args: dict[str, Any]) -> None:
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # some builtins have none: the call itself will tell
        return
    try:
        signature.bind(**args)
    except TypeError as exc:
        takes = [
            p.name
            for p in signature.parameters.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]
        accepted = f"it takes {', '.join(takes)}" if takes else "it takes no keyword arguments"
        raise GradleakError(
            f"model factory {spec.spec} cannot be called with {_spell_args(args)}: "
            f"{_first_line(exc)}; {accepted}"
        ) from exc


def _call(spec: FactorySpec, factory: Callable[..., Any], args: dict[str, Any]) -> Any:
    try:
        return factory(**args)
    except Exception as exc:  # the user's code failed: reported in one line, not hidden
        raise GradleakError(
            f"model factory {spec.spec}({_spell_args(args)}) raised {type(exc).__name__}: "
            f"{_first_line(exc)}"
        ) from exc


def _spell_args(args: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in args.items())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if line.isprintable() else repr(line)


# --- what the model takes and gives ------------------------------------------------------


def _spell(channels: int, size: tuple[int, int]) -> str:
    return f"{channels}×{size[0]}×{size[1]}"


def _first_layer(model: nn.Module) -> nn.Conv2d | nn.Linear | None:
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            return module
    return None


def _check_materialised(model: nn.Module, name: str) -> None:
    lazy = [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.lazy.LazyModuleMixin) and m.has_uninitialized_params()
    ]
    if lazy:
        raise GradleakError(
            f"model {name} holds a lazy layer ({type(lazy[0]).__name__}) whose size is set by "
            "its first input; give the layer its sizes so the weights exist when it is built"
        )


def _forward(model: nn.Module, batch: int, channels: int, size: tuple[int, int]) -> Any:
    """The model's output for a batch of zeros, in eval mode and without gradients, so that
    the probe changes no batch-norm statistics and draws no random numbers."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return model(torch.zeros(batch, channels, *size))
    finally:
        model.train(was_training)


def _runs(model: nn.Module, channels: int, size: tuple[int, int]) -> str | None:
    """None when a 1-image batch of this shape runs through the model, else the error."""
    try:
        _forward(model, 1, channels, size)
    except Exception as exc:  # any failure of the user's forward means "not this shape"
        return f"{type(exc).__name__}: {_first_line(exc)}"
    return None


def _candidates(
    model: nn.Module, prefer: tuple[int, tuple[int, int]] | None, name: str
) -> list[tuple[int, tuple[int, int]]]:
    first = _first_layer(model)
    if first is None:
        raise GradleakError(
            f"model {name} has no Conv2d or Linear layer to read its input from; gradleak "
            "attacks image classifiers that start with one"
        )
    if isinstance(first, nn.Conv2d):
        sides = [prefer[1]] if prefer is not None else []
        sides += [(side, side) for side in COMMON_SIDES]
        return [(first.in_channels, s) for s in dict.fromkeys(sides)]
    features = first.in_features
    shapes: list[tuple[int, tuple[int, int]]] = []
    if prefer is not None and prefer[0] * prefer[1][0] * prefer[1][1] == features:
        shapes.append(prefer)
    preferred = (prefer[0],) if prefer is not None else ()
    for channels in dict.fromkeys((*preferred, *COMMON_CHANNELS)):
        pixels, rest = divmod(features, channels)
        side = math.isqrt(pixels)
        if not rest and side * side == pixels and side > 0:
            shapes.append((channels, (side, side)))
    if not shapes:
        raise GradleakError(
            f"model {name} starts with a Linear layer of {features} inputs, which is no image "
            "C×N×N (C = 1 or 3) flattened; make the first layer take C·H·W inputs"
        )
    return list(dict.fromkeys(shapes))


def probe_input_shape(
    model: nn.Module,
    prefer: tuple[int, tuple[int, int]] | None = None,
    *,
    name: str | None = None,
) -> tuple[int, tuple[int, int]]:
    """The image shape a model takes: the first that a 1-image batch of zeros runs through.

    The channels are the first Conv2d's `in_channels`. After a first Linear layer (an MLP
    that flattens its input) the shapes tried are the square images of its `in_features`
    inputs: with `prefer`'s channels first, then 3 and 1. After a first Conv2d the sizes
    tried are `prefer`'s, then the square sides of `COMMON_SIDES` (32, 28, 64, 224, ...).
    The forward passes run in eval mode without gradients, so the model is left as it was.

    Args:
        model: the model (any module whose forward takes images B×C×H×W).
        prefer: the data's (channels, (height, width)), tried first; None: no preference.
        name: how messages name the model (default: its class name).

    Returns:
        (channels, (height, width)).

    Raises:
        GradleakError: no Conv2d or Linear layer, a lazy layer not yet sized, a first Linear
            whose inputs are no square image, or a model that runs on none of the shapes
            tried (naming them and the error of the first).
    """
    name = name or type(model).__name__
    _check_materialised(model, name)
    tried = []
    first_error = ""
    for channels, size in _candidates(model, prefer, name):
        error = _runs(model, channels, size)
        if error is None:
            return channels, size
        tried.append(_spell(channels, size))
        first_error = first_error or error
    raise GradleakError(
        f"model {name} runs on none of the image shapes tried ({', '.join(tried)}); at "
        f"{tried[0]}: {first_error}; its forward must take a batch B×C×H×W of images"
    )


def output_classes(
    model: nn.Module, channels: int, size: tuple[int, int], *, name: str | None = None
) -> int:
    """The number of classes a model's logits give, checked on a batch of 2 images.

    Args:
        model: the model; left in the mode it was in.
        channels: channels of its input.
        size: (height, width) of its input.
        name: how messages name the model (default: its class name).

    Returns:
        K, the width of its logits.

    Raises:
        GradleakError: the forward fails, or its output is not a float tensor 2×K with
            K >= 2.
    """
    name = name or type(model).__name__
    try:
        out = _forward(model, _CHECK_BATCH, channels, size)
    except Exception as exc:  # the user's forward failed on a batch: reported in one line
        raise GradleakError(
            f"model {name} fails on a batch of {_CHECK_BATCH} {_spell(channels, size)} images: "
            f"{type(exc).__name__}: {_first_line(exc)}"
        ) from exc
    if isinstance(out, torch.Tensor):
        what = f"a {out.dtype} tensor of shape {'×'.join(map(str, out.shape)) or 'scalar'}"
        ok = out.is_floating_point() and out.dim() == 2 and out.shape[0] == _CHECK_BATCH
        if ok and out.shape[1] >= 2:
            return int(out.shape[1])
    else:
        what = f"a {type(out).__name__}"
    raise GradleakError(
        f"model {name} gives {what} for a batch of {_CHECK_BATCH} images, not class logits (a "
        f"float tensor {_CHECK_BATCH}×K with K >= 2 classes); return the logits from forward"
    )


def has_batch_norm(model: nn.Module) -> bool:
    """Whether `model` holds a batch-norm layer (of any dimension)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def describe_model(
    model: nn.Module,
    prefer: tuple[int, tuple[int, int]] | None = None,
    *,
    name: str | None = None,
) -> ModelShape:
    """What a model takes and gives: its input shape (probed), classes and batch norm.

    Args:
        model: the model.
        prefer: the data's (channels, (height, width)), tried first (`probe_input_shape`).
        name: how messages name the model (default: its class name).

    Returns:
        The model's shape.

    Raises:
        GradleakError: see `probe_input_shape` and `output_classes`.
    """
    channels, size = probe_input_shape(model, prefer, name=name)
    classes = output_classes(model, channels, size, name=name)
    return ModelShape(channels, size, classes, has_batch_norm(model))


def check_input_shape(
    model: nn.Module, channels: int, size: Sequence[int], *, name: str | None = None
) -> ModelShape:
    """Refuse a model that does not take images of this shape, saying which it takes.

    Args:
        model: the model.
        channels: channels of the data's images.
        size: (height, width) of the data's images.
        name: how messages name the model (default: its class name).

    Returns:
        The model's shape at this input.

    Raises:
        GradleakError: the model runs on another shape (named, with the --image-size that
            fixes it where only the size differs), on none, or gives no class logits.
    """
    name = name or type(model).__name__
    hw = (int(size[0]), int(size[1]))
    takes = probe_input_shape(model, (channels, hw), name=name)
    if takes != (channels, hw):
        fix = (
            f"use --image-size {takes[1][0]} with a dataset that is resized (folder)"
            if takes[0] == channels and takes[1][0] == takes[1][1]
            else "use data of that shape or a model for these images"
        )
        raise GradleakError(
            f"model {name} takes {_spell(*takes)} images, not the data's "
            f"{_spell(channels, hw)}; {fix}"
        )
    classes = output_classes(model, channels, hw, name=name)
    return ModelShape(channels, hw, classes, has_batch_norm(model))


def check_labels_fit(labels: torch.Tensor, num_classes: int, *, name: str) -> None:
    """Refuse labels the model's logits cannot score.

    Args:
        labels: the data's labels (any shape; empty passes).
        num_classes: the width of the model's logits.
        name: how the message names the model.

    Raises:
        GradleakError: "labels reach L but the model outputs only K classes".
    """
    if labels.numel() and int(labels.max()) >= num_classes:
        raise GradleakError(
            f"labels reach {int(labels.max())} but the model {name} outputs only {num_classes} "
            f"classes (0..{num_classes - 1}); give it at least {int(labels.max()) + 1} classes "
            "(e.g. --model-arg num_classes=...) or attack images of lower labels"
        )
