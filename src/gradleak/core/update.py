"""The `SharedUpdate`: exactly what a client sends to the server, nothing more."""

from __future__ import annotations

import enum
from collections.abc import Mapping
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


@dataclass(frozen=True)
class SharedUpdate:
    """Named tensors a client shares, their kind, and what the protocol itself discloses."""

    tensors: Mapping[str, torch.Tensor]
    kind: UpdateKind = UpdateKind.GRADIENT
    metadata: Metadata = field(default_factory=dict)
    # Batch-norm running statistics after the client's training, when the client shares them.
    buffers: Mapping[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Detached copies: the update must not keep a graph back to the private batch.
        frozen = {name: t.detach().clone() for name, t in self.tensors.items()}
        object.__setattr__(self, "tensors", frozen)
        buffers = {name: t.detach().clone() for name, t in self.buffers.items()}
        object.__setattr__(self, "buffers", buffers)
        object.__setattr__(self, "kind", UpdateKind(self.kind))
        object.__setattr__(self, "metadata", dict(self.metadata))

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
        path = Path(path)
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
            kind = UpdateKind(payload.get("kind", "gradient"))
        except ValueError as exc:
            valid = ", ".join(k.value for k in UpdateKind)
            raise GradleakError(
                f"{path}: unknown update kind {payload.get('kind')!r}; one of {valid}"
            ) from exc
        tensors = payload["tensors"]
        if not isinstance(tensors, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in tensors.items()
        ):
            raise GradleakError(
                f"{path}: 'tensors' must map parameter names to tensors; "
                "save updates with SharedUpdate.save"
            )
        metadata = payload.get("metadata", {})
        if not isinstance(metadata, dict):
            raise GradleakError(f"{path}: 'metadata' must be a mapping of names to values")
        buffers = payload.get("buffers", {})
        if not isinstance(buffers, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in buffers.items()
        ):
            raise GradleakError(f"{path}: 'buffers' must map buffer names to tensors")
        return cls(tensors, kind, metadata, buffers=buffers)

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


def _few(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
