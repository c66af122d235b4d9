"""Update files: reading an update captured anywhere, and writing one as safetensors.

Three forms are read (`load_update_file`), the reader picked by the file's suffix
(`READERS`), never by guessing at its bytes:

- a safetensors file (`.safetensors`) of named tensors: parameter name → tensor. Its
  `__metadata__` (string → string) may carry `kind` (gradient, weight_delta or
  admm_increment), `num_samples` and any other metadata; values are read back as the JSON
  value they spell where they spell an int, a float or a bool (`"32"` → 32, `"true"` →
  True) and as strings otherwise. Tensors named `buffers/NAME` are the client's buffers
  (batch-norm running statistics), not part of the update. `format` is the file's own key.
- any other file is read with `torch.load(..., weights_only=True)`, which refuses pickled
  code: a dict of named tensors (the update itself), or the payload `SharedUpdate.save`
  writes ({"format", "kind", "metadata", "tensors", "buffers"}).
- a pair of state dicts (`base`): the update is the local state minus the global one
  (the model the client received), a weight difference. Each state is a file of either
  form above; a torch file may wrap its state dict under "state_dict" or "model" and prefix
  every name with "module." (nn.DataParallel). Entries that are not the model's parameters
  (buffers such as batch norm's running statistics and its step counter) are not
  differenced: the local state's values become the update's buffers.

`save_update_safetensors` writes the safetensors form, which `load_update_file` reads back
to an equal update (tensors, buffers, kind and metadata).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from gradleak.core.errors import GradleakError
from gradleak.core.files import write_bytes_atomically
from gradleak.core.update import SharedUpdate, UpdateKind, state_difference

SAFETENSORS_SUFFIX = ".safetensors"
# Names of buffers among a safetensors update's tensors: "/" never appears in a module's
# parameter names, so the prefix cannot be mistaken for one.
BUFFER_PREFIX = "buffers/"
# The `__metadata__` keys a safetensors update file keeps for itself.
FORMAT_KEY = "format"
KIND_KEY = "kind"
UPDATE_FORMAT = "gradleak.SharedUpdate/1"
# Where a torch file's state dict may be wrapped (gradleak's and other tools' checkpoints).
_STATE_WRAPPERS = ("state_dict", "model")
_DATA_PARALLEL_PREFIX = "module."
# How many names an error lists before counting the rest.
_SHOWN = 3


@dataclass(frozen=True)
class TensorFile:
    """What one file holds, before it is read as an update.

    Attributes:
        tensors: name → value (values are checked when the update is made).
        kind: the kind the file names, or None where it names none.
        metadata: the file's metadata (num_samples and the like).
        buffers: buffer name → value.
    """

    tensors: Mapping[str, object]
    kind: str | None = None
    metadata: Mapping[str, object] = field(default_factory=dict)
    buffers: Mapping[str, object] = field(default_factory=dict)


def _check_file(path: Path, what: str) -> None:
    if path.is_dir():
        raise GradleakError(f"{what} {path} is a folder; pass the file itself")
    if not path.is_file():
        raise GradleakError(f"{what} not found: {path}")


def _read_safetensors(path: Path, what: str) -> TensorFile:
    from safetensors import safe_open  # imported where a safetensors file is read

    try:
        with safe_open(str(path), framework="pt") as handle:
            header = dict(handle.metadata() or {})
            names = handle.keys()  # a safe_open handle is not itself iterable
            named = {name: handle.get_tensor(name) for name in names}
    except PermissionError as exc:
        raise GradleakError(f"{what} {path} cannot be read (permission denied)") from exc
    # The block calls only safetensors, which raises its own error for a truncated or
    # malformed file (and OSError for one it cannot map): each means a bad file.
    except Exception as exc:
        raise GradleakError(
            f"{what} {path} is not a readable safetensors file ({_reason(exc)}); write it "
            "again with safetensors' save_file"
        ) from exc
    header.pop(FORMAT_KEY, None)
    kind = header.pop(KIND_KEY, None)
    tensors = {n: t for n, t in named.items() if not n.startswith(BUFFER_PREFIX)}
    buffers = {n[len(BUFFER_PREFIX) :]: t for n, t in named.items() if n.startswith(BUFFER_PREFIX)}
    metadata = {key: parse_metadata_value(value) for key, value in header.items()}
    return TensorFile(tensors, kind, metadata, buffers)


def _reason(exc: BaseException) -> str:
    """An exception in a few words on one line, for a message about a bad file."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _read_torch(path: Path, what: str) -> TensorFile:
    try:
        # weights_only refuses pickled code: a hostile file cannot run anything. torch
        # warns about such a file before refusing it; the refusal says it in one line.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError as exc:
        raise GradleakError(f"{what} {path} cannot be read (permission denied)") from exc
    # torch.load raises many unrelated types for a file that is not tensors only: pickled
    # code (UnpicklingError), a broken archive (RuntimeError), a truncated file (EOFError)...
    # The block calls nothing else, so each of them means a bad file.
    except Exception as exc:
        raise GradleakError(
            f"{what} {path} is not a tensors-only torch file ({type(exc).__name__}); save "
            "named tensors with torch.save(dict) or safetensors, never pickled objects"
        ) from exc
    if not isinstance(payload, Mapping):
        raise GradleakError(
            f"{what} {path} holds a {type(payload).__name__}, not a dict of named tensors"
        )
    if isinstance(payload.get("tensors"), Mapping):  # SharedUpdate.save's layout
        kind = payload.get("kind")
        return TensorFile(
            payload["tensors"],
            None if kind is None else str(kind),
            payload.get("metadata", {}),
            payload.get("buffers", {}),
        )
    return TensorFile(payload)


# The reader of each suffix; every other file is read as a torch file.
READERS: dict[str, Callable[[Path, str], TensorFile]] = {SAFETENSORS_SUFFIX: _read_safetensors}


def read_tensor_file(path: Path | str, what: str = "update file") -> TensorFile:
    """Read a safetensors or tensors-only torch file as it is (see the module's docstring).

    Args:
        path: the file; `.safetensors` is read as safetensors, anything else as torch.
        what: what the file is, for messages ("update file", "truth file", ...).

    Returns:
        Its named values, kind, metadata and buffers, unchecked.

    Raises:
        GradleakError: a missing path or a folder, a file that is not tensors only (pickled
            code is refused before anything runs), a truncated or malformed file, or a
            torch file that holds no dict.
    """
    path = Path(path)
    _check_file(path, what)
    reader = READERS.get(path.suffix.lower(), _read_torch)
    return reader(path, what)


def read_state_file(path: Path | str, what: str = "state file") -> dict[str, torch.Tensor]:
    """A model's state dict from a safetensors or torch file.

    A torch file may wrap it under "state_dict" or "model"; a "module." prefix on every
    name (nn.DataParallel) is dropped.

    Args:
        path: the file.
        what: what the file is, for messages.

    Returns:
        name → tensor.

    Raises:
        GradleakError: as `read_tensor_file`; a file whose state dict is empty, or holds a
            value that is not a tensor.
    """
    return _read_state(Path(path), what)[0]


def _read_state(path: Path, what: str) -> tuple[dict[str, torch.Tensor], TensorFile]:
    """The state dict a file holds, and the file as read (its kind and metadata)."""
    read = read_tensor_file(path, what)
    state = unwrap_state(read.tensors)
    if not isinstance(state, Mapping) or not state:
        raise GradleakError(f"{what} {path} holds no tensors; save a model.state_dict()")
    checked = {}
    for name, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise GradleakError(
                f"{what} {path}: entry {name!r} is a {type(value).__name__}, not a tensor; "
                "save a model.state_dict()"
            )
        checked[str(name)] = value
    return strip_data_parallel(checked), read


def unwrap_state(loaded: object) -> object:
    """The state dict inside a saved object: under "state_dict" or "model" where a tool's
    checkpoint wraps it (gradleak's and others'), else the object itself."""
    if isinstance(loaded, Mapping):
        for key in _STATE_WRAPPERS:
            if isinstance(loaded.get(key), Mapping):
                return loaded[key]
    return loaded


def strip_data_parallel(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` without the "module." that nn.DataParallel and DistributedDataParallel put
    before every name (a state where only some names have it is left as it is)."""
    if state and all(name.startswith(_DATA_PARALLEL_PREFIX) for name in state):
        return {n[len(_DATA_PARALLEL_PREFIX) :]: v for n, v in state.items()}
    return state


def load_update_file(
    path: Path | str,
    *,
    base: Path | str | None = None,
    kind: UpdateKind | str | None = None,
    parameters: Collection[str] | None = None,
) -> SharedUpdate:
    """Read an update captured anywhere: one file, or a local state and its base.

    Args:
        path: the update file, or with `base` the client's local state after training.
        base: the global state the client started from (the model it received); the
            update is then `path` − `base`, a weight difference.
        kind: the update's kind where the file names none (one file: default gradient; a
            pair: default weight_delta; a pair is never a gradient).
        parameters: with `base`, the names of the model's parameters: only these are
            differenced, the local state's other entries become buffers. None: every
            floating-point entry is differenced, the others (integer counters) are buffers.

    Returns:
        The update, checked as any update is when it is made (names are strings, values
        dense tensors of a floating-point dtype).

    Raises:
        GradleakError: a file that cannot be read (see `read_tensor_file`); a kind that
            disagrees with the file's, or that a pair cannot be; a base whose names or
            shapes differ from the local state's; a value that is not a tensor; integer
            tensors in the update; each prefixed with the file's path.
    """
    given = None if kind is None else _kind(kind, "--update-kind")
    if base is not None:
        return _load_pair(Path(path), Path(base), given, parameters)
    path = Path(path)
    read = read_tensor_file(path)
    return _update(path, read, _chosen_kind(path, read, given) or UpdateKind.GRADIENT)


def _chosen_kind(path: Path, read: TensorFile, given: UpdateKind | None) -> UpdateKind | None:
    """The file's kind, else the one given; both, and different: refused."""
    saved = None if read.kind is None else _kind(read.kind, f"update file {path}: kind")
    if saved is not None and given is not None and saved is not given:
        raise GradleakError(
            f"update file {path} says its kind is {saved.value} but --update-kind is "
            f"{given.value}; drop --update-kind (it is for files that name no kind)"
        )
    return saved or given


def _load_pair(
    local_path: Path, base_path: Path, given: UpdateKind | None, parameters: Collection[str] | None
) -> SharedUpdate:
    # The local file's kind and metadata (a safetensors state may carry num_samples)
    # describe the update.
    local, read_local = _read_state(local_path, "update file")
    kind = _chosen_kind(local_path, read_local, given)
    if kind is UpdateKind.GRADIENT:
        raise GradleakError(
            "a local state and its base (--update-base) give a weight difference, not a "
            "gradient; read it as weight_delta or admm_increment (--protocol fedsgd with "
            "--local-lr reads a weight difference as a gradient)"
        )
    base, _ = _read_state(base_path, "update base")
    _check_same_names(local, base, local_path, base_path)
    for name, value in local.items():
        if value.shape != base[name].shape:
            raise GradleakError(
                f"{local_path}: {name!r} has shape {tuple(value.shape)} but the base "
                f"{base_path} has {tuple(base[name].shape)}; pass the state the client "
                "started from"
            )
    if parameters is None:
        differenced = [n for n, t in local.items() if t.is_floating_point()]
    else:
        differenced = [n for n in local if n in parameters]
    tensors, buffers = state_difference(base, local, differenced)
    read = TensorFile(tensors, None, read_local.metadata, buffers)
    return _update(local_path, read, kind or UpdateKind.WEIGHT_DELTA)


def _check_same_names(
    local: Mapping[str, object], base: Mapping[str, object], local_path: Path, base_path: Path
) -> None:
    missing = [n for n in local if n not in base]
    extra = [n for n in base if n not in local]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"the base lacks {_few(missing)}")
        if extra:
            parts.append(f"only the base has {_few(extra)}")
        raise GradleakError(
            f"the update base {base_path} is not a state of the model {local_path} is "
            f"({'; '.join(parts)}); pass the global state the client started from"
        )


def _update(path: Path, read: TensorFile, kind: UpdateKind) -> SharedUpdate:
    """The update `read` holds, read as `kind`; its errors name the file."""
    try:
        return SharedUpdate(read.tensors, kind, read.metadata, buffers=read.buffers)  # type: ignore[arg-type]
    except GradleakError as exc:
        raise GradleakError(f"{path}: {exc}") from exc


def _kind(value: object, what: str) -> UpdateKind:
    try:
        return UpdateKind(value)
    except ValueError as exc:
        valid = ", ".join(k.value for k in UpdateKind)
        raise GradleakError(f"{what} {value!r} is not an update kind; one of {valid}") from exc


def _few(names: list[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:_SHOWN])
    return shown + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


# --- writing ----------------------------------------------------------------------------


def parse_metadata_value(text: str) -> int | float | str | bool:
    """A safetensors metadata value as the value it spells: an int, a float or a bool where
    the text is that JSON value ("32", "0.5", "true"), else the text itself."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    if isinstance(value, (bool, int, float, str)):
        return value
    return text  # a list, an object or null: kept as the text it is


def format_metadata_value(value: int | float | str | bool) -> str:
    """The text `parse_metadata_value` reads back as `value`: plain where it reads back the
    same (words, numbers), JSON-quoted where a string would read as a number or a bool."""
    if isinstance(value, str):
        same = parse_metadata_value(value)
        return value if isinstance(same, str) and same == value else json.dumps(value)
    # Numbers and bools in JSON's spelling (NaN and Infinity included), which json.loads reads.
    return json.dumps(value)


def save_update_safetensors(update: SharedUpdate, path: Path | str) -> Path:
    """Write `update` as a safetensors file that `load_update_file` reads back equal.

    Tensors keep their names; buffers are stored as `buffers/NAME`; `__metadata__` holds
    `format`, `kind` and every metadata value as text (`format_metadata_value`). The file
    is written beside `path` and renamed into place.

    Args:
        update: the update.
        path: where to write (a `.safetensors` name, so that it is read back as such).

    Returns:
        `path` as a Path.

    Raises:
        GradleakError: metadata named `format` or `kind` (the file's own keys), or a tensor
            whose name starts with `buffers/`.
    """
    from safetensors.torch import save  # imported where a safetensors file is written

    path = Path(path)
    reserved = [key for key in (FORMAT_KEY, KIND_KEY) if key in update.metadata]
    if reserved:
        raise GradleakError(
            f"update metadata {reserved[0]!r} is a key the file keeps for itself; rename it"
        )
    clash = [name for name in update.tensors if name.startswith(BUFFER_PREFIX)]
    if clash:
        raise GradleakError(
            f"update tensor {clash[0]!r} starts with {BUFFER_PREFIX!r}, which names buffers; "
            "rename it"
        )
    named = {name: _plain(t) for name, t in update.tensors.items()}
    named.update({BUFFER_PREFIX + name: _plain(t) for name, t in update.buffers.items()})
    header = {FORMAT_KEY: UPDATE_FORMAT, KIND_KEY: update.kind.value}
    header.update({key: format_metadata_value(v) for key, v in update.metadata.items()})
    write_bytes_atomically(path, save(named, metadata=header))
    return path


def _plain(tensor: torch.Tensor) -> torch.Tensor:
    # safetensors stores contiguous CPU tensors that share no memory with each other.
    return tensor.detach().cpu().contiguous().clone()
