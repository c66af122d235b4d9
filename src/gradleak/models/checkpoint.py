"""Save and safely load model weights (tensors only, never pickled code)."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from gradleak.core.errors import GradleakError
from gradleak.core.files import replaced_atomically
from gradleak.core.update_files import strip_data_parallel, unwrap_state
from gradleak.models.registry import canonical_model_name, is_model_name
from gradleak.models.torchvision_names import adapt_state
from gradleak.models.user import is_factory_spec

# How many offending keys an error message names before summarising the rest.
_SHOWN_KEYS = 3
_PRIMITIVES = (str, int, float, bool, type(None))


def save_checkpoint(model: nn.Module, path: Path | str, /, **metadata: object) -> Path:
    """Write {"state_dict": ..., "metadata": {...}} to `path`; metadata must be primitives.

    The tensors are saved detached and on the CPU. The file is written beside `path` and
    renamed into place, so an interrupted save leaves no partial checkpoint; missing
    parent folders are created.

    Args:
        model: the model whose `state_dict()` is saved (positional only).
        path: where to write, usually a `.pt` file (positional only).
        **metadata: values to save alongside, e.g. model="lenet", epoch=3: str, int,
            float, bool, None, or lists/tuples/dicts (str keys) of them. A `model` that
            names a registry model is recorded in its canonical spelling
            (`canonical_model_name`: "mlp" is saved as "mlp2-1024").

    Returns:
        `path` as a Path.

    Raises:
        GradleakError: when a metadata value is not one of the plain types above.
    """
    # model and path are positional-only so metadata may itself use the keys "model"/"path".
    for key, value in metadata.items():
        if not _is_plain(value):
            raise GradleakError(
                f"checkpoint metadata {key!r} is a {type(value).__name__}; use str, int, "
                "float, bool, None or lists/dicts of them"
            )
    model_name = metadata.get("model")
    if is_model_name(model_name):
        # One spelling per architecture, so any spelling of it reads the checkpoint back.
        metadata["model"] = canonical_model_name(str(model_name))
    path = Path(path)
    state = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    # Written beside the target and renamed, so an interrupted save never leaves half a file
    # where a checkpoint is expected.
    with replaced_atomically(path) as partial:
        torch.save({"state_dict": state, "metadata": dict(metadata)}, partial)
    return path


def _is_plain(value: object) -> bool:
    # Only what torch.load(weights_only=True) can read back without allow-listing classes.
    if isinstance(value, _PRIMITIVES):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False


def load_checkpoint(model: nn.Module, path: Path | str) -> nn.Module:
    """Load weights from `path` into `model` (in place) and return it.

    Accepts a raw state_dict or a dict holding one under "state_dict" or "model".
    The file is read tensors-only (no pickled code runs), and a "module." prefix on every
    key (nn.DataParallel) is dropped. A state dict of torchvision's ResNet-18 (`fc`,
    `downsample`) loads into gradleak's `resnet18` (`models/torchvision_names.py`).

    Args:
        model: the model to load into; its keys and shapes must match the checkpoint's.
        path: the checkpoint file.

    Returns:
        `model` itself, with the loaded weights.

    Raises:
        GradleakError: when `path` is not a file.
        GradleakError: when the file is not a tensors-only checkpoint torch can read.
        GradleakError: when it holds no non-empty state_dict of tensors.
        GradleakError: when its keys or shapes differ from `model`'s (the error names them).
        GradleakError: when a tensor is sparse, of another kind of dtype than the model's
            (say complex or integer for a float parameter), or holds NaN or infinity.
    """
    path = Path(path)
    # A torchvision ResNet-18 state dict is read in gradleak's names (`torchvision_names`).
    state = adapt_state(model, _extract_state_dict(_read(path), path))
    _check_fits(model, state, path)
    _check_values(model, state, path)
    model.load_state_dict(state, strict=True)
    return model


def read_checkpoint_metadata(path: Path | str) -> dict[str, object]:
    """The metadata saved with a checkpoint; {} for a file that carries none.

    Args:
        path: the checkpoint file.

    Returns:
        A copy of the "metadata" dict `save_checkpoint` wrote; {} for a checkpoint without
        one (e.g. a raw state_dict).

    Raises:
        GradleakError: when `path` is not a file.
        GradleakError: when the file is not a tensors-only checkpoint torch can read.
    """
    path = Path(path)
    loaded = _read(path)
    metadata = loaded.get("metadata") if isinstance(loaded, Mapping) else None
    return dict(metadata) if isinstance(metadata, Mapping) else {}


def check_checkpoint_model(
    path: Path | str, model_name: str, model_args: Mapping[str, object] | None = None
) -> None:
    """Refuse a checkpoint whose metadata names a model other than `model_name`.

    Checkpoints without a model name pass (a plain state dict, e.g. torchvision's);
    load_checkpoint still checks that they fit. Names are compared by
    `canonical_model_name`, so "resnet20" and "resnet20-1" agree. A factory's checkpoint
    also records its `model_args`, which must be the same: arguments such as an activation
    change the model without changing a tensor's shape.

    Args:
        path: the checkpoint file.
        model_name: the name of the model it is about to be loaded into.
        model_args: the keyword arguments that model's factory is built with.

    Raises:
        GradleakError: when `path` is not a file.
        GradleakError: when the file is not a tensors-only checkpoint torch can read.
        GradleakError: when the saved model name differs from `model_name`.
        GradleakError: when a factory's saved arguments differ from `model_args`.
    """
    metadata = read_checkpoint_metadata(path)
    saved = metadata.get("model")
    if not isinstance(saved, str) or not saved.strip():
        return
    if canonical_model_name(saved) != canonical_model_name(model_name):
        raise GradleakError(
            f"checkpoint {path} was saved from model {saved!r}, not {model_name!r}; "
            f"pass --model {_shown(saved.strip())} or a checkpoint saved from {model_name}"
        )
    saved_args = metadata.get("model_args") or {}
    if is_factory_spec(saved) and dict(saved_args) != dict(model_args or {}):
        spelled = " ".join(f"--model-arg {k}={v}" for k, v in dict(saved_args).items())
        raise GradleakError(
            f"checkpoint {path} was saved from {saved.strip()} with model_args "
            f"{dict(saved_args)}, not {dict(model_args or {})}; pass "
            f"{_shown(spelled) or 'no --model-arg'} or a checkpoint saved with these arguments"
        )


def _read(path: Path) -> object:
    """torch.load of tensors and plain values only; anything else is a one-line error."""
    if path.is_dir():
        raise GradleakError(f"checkpoint {path} is a folder, not a file; {_inside(path)}")
    if not path.is_file():
        raise GradleakError(f"checkpoint not found: {path}; pass the path of a saved .pt file")
    try:
        # weights_only refuses pickled code, so a hostile file cannot run anything.
        return torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError as error:
        raise GradleakError(
            f"checkpoint {path} cannot be read (permission denied); check its mode"
        ) from error
    # torch.load raises many unrelated types for files that are no checkpoint: pickled
    # code (UnpicklingError), a broken zip archive (RuntimeError), a truncated file
    # (EOFError), random bytes (KeyError, IndexError, TypeError, ... from its unpickler).
    # The block calls nothing but torch.load, so each of them means a bad file.
    except Exception as error:
        raise GradleakError(
            f"{path} is not a tensors-only checkpoint ({type(error).__name__}); re-save it "
            "with gradleak's save_checkpoint or torch.save(model.state_dict(), path)"
        ) from error


def _inside(folder: Path) -> str:
    """How to name a checkpoint file instead of `folder`: its one .pt file if it has one."""
    found = sorted(p for p in folder.glob("*.pt") if p.is_file())
    if len(found) == 1:
        return f"did you mean {found[0]}?"
    if found:
        return f"pass one of its {len(found)} .pt files, e.g. {found[0]}"
    return "pass the path of a saved .pt file"


def _extract_state_dict(loaded: object, path: Path) -> dict[str, torch.Tensor]:
    loaded = unwrap_state(loaded)
    if (
        not isinstance(loaded, Mapping)
        or not loaded
        or not all(isinstance(v, torch.Tensor) for v in loaded.values())
    ):
        raise GradleakError(
            f"{path} holds no state_dict of tensors; save a model.state_dict() or a dict with "
            "it under 'state_dict' or 'model'"
        )
    # Checkpoints from nn.DataParallel / DistributedDataParallel prefix every key.
    return strip_data_parallel({str(k): v for k, v in loaded.items()})


def _check_fits(model: nn.Module, state: Mapping[str, torch.Tensor], path: Path) -> None:
    expected = model.state_dict()
    problems = []
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    for label, keys in (
        ("missing keys", missing),
        ("unexpected keys", unexpected),
        ("shape mismatches", mismatched),
    ):
        if keys:
            problems.append(f"{label} {_summarise(keys)}")
    if problems:
        raise GradleakError(
            f"checkpoint {path} is for another model than {type(model).__name__} "
            f"({'; '.join(problems)}); build the model the checkpoint was saved from"
        )


def _kind(dtype: torch.dtype) -> str:
    if dtype.is_complex:
        return "complex"
    if dtype.is_floating_point:
        return "floating-point"
    return "boolean" if dtype == torch.bool else "integer"


def _check_values(model: nn.Module, state: Mapping[str, torch.Tensor], path: Path) -> None:
    """Refuse tensors `load_state_dict` would copy wrongly or that no model can compute with."""
    for name, expected in model.state_dict().items():
        tensor = state[name]
        if tensor.layout != torch.strided:
            raise GradleakError(
                f"checkpoint {path} holds {name} as a {tensor.layout} tensor; re-save it with "
                "dense tensors (tensor.to_dense())"
            )
        if _kind(tensor.dtype) != _kind(expected.dtype):
            raise GradleakError(
                f"checkpoint {path} holds {name} as {_kind(tensor.dtype)} ({tensor.dtype}) "
                f"but the model's is {_kind(expected.dtype)} ({expected.dtype}); re-save it "
                "from the model it belongs to"
            )
        if (tensor.is_floating_point() or tensor.is_complex()) and not bool(
            torch.isfinite(tensor).all()
        ):
            raise GradleakError(
                f"checkpoint {path} holds non-finite values in {name} (NaN or infinity): the "
                "training that wrote it diverged; use an earlier epoch's checkpoint or train "
                "again with a lower --lr"
            )


def _shown(text: str) -> str:
    # Names read from a file may hold line breaks or control characters; an error stays one
    # line, so those are shown quoted and escaped.
    return text if text.isprintable() else repr(text)


def _summarise(keys: list[str]) -> str:
    shown = ", ".join(_shown(key) for key in keys[:_SHOWN_KEYS])
    rest = len(keys) - _SHOWN_KEYS
    return f"{shown} (+{rest} more)" if rest > 0 else shown


# Hex characters of a SHA-256 kept in a fingerprint: a clash among one user's models is
# out of reach.
_FINGERPRINT_CHARS = 16


def model_fingerprint(model: nn.Module) -> str:
    """A short digest of the model's state: every parameter and buffer, by name.

    Names, shapes, dtypes and the raw bytes of every parameter and buffer enter a
    SHA-256, so two models give the same string exactly when they hold the same state
    (the same architecture with the same weights and batch-norm statistics). Tools that
    are trained for one server model (learned inverters) record it and refuse another.

    Args:
        model: any module (left unchanged).

    Returns:
        The first 16 hex characters of the digest.
    """
    digest = hashlib.sha256()
    tensors = itertools.chain(model.named_parameters(), model.named_buffers())
    for name, tensor in tensors:
        data = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}|".encode())
        # The raw bytes, whatever the dtype (bfloat16 has no numpy type).
        digest.update(data.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:_FINGERPRINT_CHARS]
