"""The `SharedUpdate`: exactly what a client sends to the server, nothing more."""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from gradleak.core.errors import GradleakError

Metadata = Mapping[str, "int | float | str | bool"]


class UpdateKind(str, enum.Enum):
    """What the named tensors of an update mean."""

    GRADIENT = "gradient"
    WEIGHT_DELTA = "weight_delta"
    ADMM_INCREMENT = "admm_increment"

    @property
    def description(self) -> str:
        """What updates of this kind are, in words (plural)."""
        return _KIND_WORDS[self] + "s"

    @property
    def noun(self) -> str:
        """One update of this kind, in words, with its article."""
        return "a " + _KIND_WORDS[self]


_KIND_WORDS = {
    UpdateKind.GRADIENT: "gradient",
    UpdateKind.WEIGHT_DELTA: "weight difference",
    UpdateKind.ADMM_INCREMENT: "FedADMM increment",
}


# The dtypes an update's tensors may have: gradients and weight differences are real
# numbers, and every attack, defense and aggregation computes with them as such.
UPDATE_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_METADATA_TYPES = (int, float, str, bool)
_INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


@dataclass(frozen=True)
class SharedUpdate:
    """Named tensors a client shares, their kind, and what the protocol itself discloses.

    Everything is checked when the update is made, so a malformed update (from a file or
    from code) fails there, in one line, and never deep inside an attack.

    Args:
        tensors: parameter name → dense tensor of a dtype in `UPDATE_DTYPES`.
        kind: what the tensors mean (an `UpdateKind` or its value).
        metadata: name → int, float, str or bool; `num_samples`, when given, is an int >= 0.
        buffers: buffer name → dense real tensor (floating point or integer, e.g. batch
            norm's running statistics and its step counter).

    Raises:
        GradleakError: a name that is not a string, a value that is not a dense tensor of
            an allowed dtype, an unknown kind, or metadata of another type.
    """

    tensors: Mapping[str, torch.Tensor]
    kind: UpdateKind = UpdateKind.GRADIENT
    metadata: Metadata = field(default_factory=dict)
    # Batch-norm running statistics after the client's training, when the client shares them.
    buffers: Mapping[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Detached copies: the update must not keep a graph back to the private batch.
        frozen = _checked_tensors(self.tensors, "update tensor", _is_update_dtype, _FLOAT_NEED)
        object.__setattr__(self, "tensors", frozen)
        buffers = _checked_tensors(self.buffers, "update buffer", _is_real, _REAL_NEED)
        object.__setattr__(self, "buffers", buffers)
        object.__setattr__(self, "kind", _kind(self.kind))
        object.__setattr__(self, "metadata", _checked_metadata(self.metadata))

    @property
    def num_samples(self) -> int | None:
        value = self.metadata.get("num_samples")
        return int(value) if value is not None else None

    def save(self, path: Path) -> None:
        """Write tensors and metadata only, loadable with `weights_only=True`."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "format": "gradleak.SharedUpdate/1",
            "kind": self.kind.value,
            "metadata": dict(self.metadata),
            "tensors": dict(self.tensors),
            "buffers": dict(self.buffers),
        }
        torch.save(payload, path)

    @classmethod
    def load(cls, path: Path) -> SharedUpdate:
        """Read an update `save` wrote (or any tensors-only file of that layout).

        Args:
            path: the file.

        Returns:
            The update, checked as any update is when it is made.

        Raises:
            GradleakError: a missing path or a folder; a file that is not tensors-only;
                a payload without a 'tensors' mapping; or an update `SharedUpdate` refuses
                (the error is prefixed with the path).
        """
        path = Path(path)
        if path.is_dir():
            raise GradleakError(f"update file {path} is a folder; pass the file of one update")
        if not path.is_file():
            raise GradleakError(f"update file not found: {path}")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises several unrelated types for bad files
            raise GradleakError(
                f"{path} is not a tensors-only update file ({type(exc).__name__}); "
                "save updates with SharedUpdate.save"
            ) from exc
        if not isinstance(payload, dict) or "tensors" not in payload:
            raise GradleakError(
                f"{path} holds no 'tensors' mapping; save updates with SharedUpdate.save"
            )
        try:
            return cls(
                payload["tensors"],
                payload.get("kind", UpdateKind.GRADIENT.value),
                payload.get("metadata", {}),
                buffers=payload.get("buffers", {}),
            )
        except GradleakError as exc:
            raise GradleakError(f"{path}: {exc}") from exc

    def to(self, device: torch.device | str) -> SharedUpdate:
        """The same update with every tensor and buffer on `device` (itself when there)."""
        tensors = [*self.tensors.values(), *self.buffers.values()]
        if all(t.device == torch.device(device) for t in tensors):
            return self
        return SharedUpdate(
            {name: t.to(device) for name, t in self.tensors.items()},
            self.kind,
            self.metadata,
            buffers={name: t.to(device) for name, t in self.buffers.items()},
        )

    def scaled(self, factor: float, kind: UpdateKind) -> SharedUpdate:
        """The same update with every tensor multiplied by `factor`, read as `kind`."""
        tensors = {name: t * factor for name, t in self.tensors.items()}
        return SharedUpdate(tensors, kind, self.metadata, buffers=self.buffers)

    def validate_for(self, model: nn.Module) -> None:
        """Fail with one line unless names, shapes and values fit `model`'s parameters."""
        expected = {name: p.shape for name, p in model.named_parameters()}
        missing = [n for n in expected if n not in self.tensors]
        extra = [n for n in self.tensors if n not in expected]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing {_few(missing)}")
            if extra:
                parts.append(f"unexpected {_few(extra)}")
            raise GradleakError(
                f"update does not match the model's parameters ({'; '.join(parts)}); "
                "attack it with the model that produced it"
            )
        for name, shape in expected.items():
            got = self.tensors[name].shape
            if got != shape:
                raise GradleakError(
                    f"update tensor {name!r} has shape {tuple(got)} but the model expects "
                    f"{tuple(shape)}; attack it with the model that produced it"
                )
        for name, tensor in self.tensors.items():
            if not torch.isfinite(tensor).all():
                raise GradleakError(
                    f"update tensor {name!r} contains NaN or Inf; "
                    "the client's update is corrupt or overflowed"
                )


def state_difference(
    start: Mapping[str, torch.Tensor],
    end: Mapping[str, torch.Tensor],
    parameters: Collection[str],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A client's weight difference from the model it received to the one it sent back.

    Args:
        start: the state the client received (names and shapes already checked against
            `end`).
        end: the state it sent back.
        parameters: the names that are the model's parameters; the other entries (batch
            norm's running statistics and step counter) are buffers, not differenced.

    Returns:
        end − start for each parameter (computed in float64, kept in `start`'s dtype, so a
        float32 model's difference is not rounded twice), and `end`'s buffers.
    """
    delta = {
        name: (end[name].double() - start[name].double()).to(start[name].dtype)
        for name in end
        if name in parameters
    }
    buffers = {name: t for name, t in end.items() if name not in delta}
    return delta, buffers


def _few(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


_FLOAT_NEED = "an update holds float16, bfloat16, float32 or float64 tensors; cast it with .float()"
_REAL_NEED = "buffers hold floating-point or integer tensors"


def _is_update_dtype(dtype: torch.dtype) -> bool:
    return dtype in UPDATE_DTYPES


def _is_real(dtype: torch.dtype) -> bool:
    # Integer buffers are legitimate (batch norm counts its steps in an int64).
    return dtype in UPDATE_DTYPES or dtype in _INTEGER_DTYPES


def _checked_tensors(
    tensors: object, what: str, allowed: Callable[[torch.dtype], bool], need: str
) -> dict[str, torch.Tensor]:
    """Detached copies of `tensors` after checking names, layouts and dtypes."""
    if not isinstance(tensors, Mapping):
        raise GradleakError(
            f"{what}s must map names to tensors, not {type(tensors).__name__}; "
            "save updates with SharedUpdate.save"
        )
    checked = {}
    for name, tensor in tensors.items():
        if not isinstance(name, str):
            raise GradleakError(f"{what} name {name!r} is not a string; name every tensor")
        if not isinstance(tensor, torch.Tensor):
            raise GradleakError(f"{what} {name!r} is a {type(tensor).__name__}, not a tensor")
        if tensor.layout != torch.strided:
            raise GradleakError(
                f"{what} {name!r} is a {tensor.layout} tensor; share dense tensors "
                "(tensor.to_dense())"
            )
        if not allowed(tensor.dtype):
            raise GradleakError(f"{what} {name!r} has dtype {tensor.dtype}; {need}")
        checked[name] = tensor.detach().clone()
    return checked


def _kind(kind: object) -> UpdateKind:
    try:
        return UpdateKind(kind)
    except (ValueError, TypeError) as exc:
        valid = ", ".join(k.value for k in UpdateKind)
        raise GradleakError(f"unknown update kind {kind!r}; one of {valid}") from exc


def _checked_metadata(metadata: object) -> dict[str, int | float | str | bool]:
    if not isinstance(metadata, Mapping):
        raise GradleakError(
            f"update metadata must map names to values, not {type(metadata).__name__}"
        )
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, _METADATA_TYPES):
            raise GradleakError(
                f"update metadata {key!r}: {value!r} is not a string name with an int, "
                "float, str or bool value"
            )
    samples = metadata.get("num_samples")
    if samples is not None and (
        isinstance(samples, bool) or not isinstance(samples, int) or samples < 0
    ):
        raise GradleakError(
            f"update metadata num_samples must be a count (an int >= 0), not {samples!r}"
        )
    return dict(metadata)
