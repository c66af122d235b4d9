"""Low-precision sharing: every tensor is sent in a coarser number format.

The receiver sees the values the coarse format can hold, returned in the tensor's own
dtype, so attacks run on them unchanged. Per tensor:

- `float16`, `bfloat16`: rounded to that dtype (to nearest, ties to even) and back. The
  relative error of a normal value is at most 2^-11 (float16) or 2^-8 (bfloat16); float16
  loses precision below ~6.1e-5 (subnormals), and a value beyond what the format holds
  (65504 for float16) is refused rather than sent as ±inf.
- `int8`: uniform symmetric quantisation with scale = max|x| / 127: q = round(x / scale)
  (ties to even) clamped to [-127, 127], sent as q · scale. Every entry moves by at most
  scale / 2, at most 255 distinct values remain, and a zero tensor stays zero.
- `sign`: 1-bit signSGD-style sharing with per-tensor magnitude scaling: sign(x) · mean|x|.
  The mean magnitude keeps the update's scale, without which an attack's L2 matching
  objective would compare gradients against a ±1 tensor of arbitrary scale; zeros stay zero.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch

from gradleak.core.errors import GradleakError
from gradleak.core.update import SharedUpdate
from gradleak.defenses.accounting import GaussianMechanism
from gradleak.defenses.arguments import check_count, parse_choice
from gradleak.defenses.base import ChainRole, ClientView, Family, check_no_overflow, map_tensors

NAME = "precision"
USAGE = "precision:KIND with KIND one of float16, bfloat16, int8, sign (e.g. precision:int8)"
HELP = "share every tensor in low precision: float16, bfloat16, int8 (per-tensor scale) or sign"

INT8_LEVELS = 127  # symmetric: q in [-127, 127], so 255 values and 0 is exact

# An update is sent in one number format: a second format rounds what the first already
# rounded, or replaces it.
NUMBER_FORMATS = Family("set the number format the update is sent in", "it is sent in one")


class PrecisionKind(str, enum.Enum):
    """The coarse format `LowPrecision` shares in (see the top of this module)."""

    FLOAT16 = "float16"
    BFLOAT16 = "bfloat16"
    INT8 = "int8"
    SIGN = "sign"


def _cast(dtype: torch.dtype) -> Callable[[torch.Tensor], torch.Tensor]:
    def rounded(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(dtype).to(tensor.dtype)

    return rounded


def _int8(tensor: torch.Tensor) -> torch.Tensor:
    # float64 holds float32/16 inputs exactly, so the only error is the quantisation's.
    x = tensor.to(torch.float64)
    scale = x.abs().amax() / INT8_LEVELS
    if scale == 0:
        return tensor.clone()
    q = torch.round(x / scale).clamp(-INT8_LEVELS, INT8_LEVELS)
    return (q * scale).to(tensor.dtype)


def _sign(tensor: torch.Tensor) -> torch.Tensor:
    magnitude = tensor.to(torch.float64).abs().mean()
    return (torch.sign(tensor.to(torch.float64)) * magnitude).to(tensor.dtype)


# The largest magnitude each format holds; int8 and sign scale per tensor and hold what the
# tensor's own dtype does.
QUANTISED_MAX = {
    PrecisionKind.FLOAT16: torch.finfo(torch.float16).max,
    PrecisionKind.BFLOAT16: torch.finfo(torch.bfloat16).max,
}

QUANTISERS: dict[PrecisionKind, Callable[[torch.Tensor], torch.Tensor]] = {
    PrecisionKind.FLOAT16: _cast(torch.float16),
    PrecisionKind.BFLOAT16: _cast(torch.bfloat16),
    PrecisionKind.INT8: _int8,
    PrecisionKind.SIGN: _sign,
}


@dataclass(frozen=True)
class LowPrecision:
    """Send every tensor as `kind` holds it, returned in the tensor's own dtype.

    Spelled `precision:KIND`; the kinds are described at the top of this module.

    Args:
        kind: `PrecisionKind.FLOAT16`, `BFLOAT16`, `INT8` or `SIGN` (or its value, e.g.
            "int8").
    """

    kind: PrecisionKind

    role: ClassVar[ChainRole] = ChainRole(family=NUMBER_FORMATS)
    mechanism: ClassVar[GaussianMechanism | None] = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", PrecisionKind(self.kind))

    @property
    def spec(self) -> str:
        """`precision:KIND`, which `parse_defense` reads back as an equal defense."""
        return f"{NAME}:{self.kind.value}"

    def apply(
        self,
        update: SharedUpdate,
        generator: torch.Generator,
        client: ClientView | None = None,
    ) -> SharedUpdate:
        """Replace every tensor by the values the coarse format `kind` can hold.

        Each tensor is quantised on its own (int8 and sign scale per tensor); an empty
        tensor is copied as it is. Nothing is drawn.

        Args:
            update: the update to coarsen; left unchanged.
            generator: unused (low precision is deterministic).
            client: ignored; default None.

        Returns:
            A new update of the coarsened tensors, each in its own shape, dtype and device,
            with `update`'s kind, metadata and buffers.

        Raises:
            GradleakError: when a tensor of `update` is not floating point.
            GradleakError: when a finite value becomes ±inf or NaN in the coarse format
                (beyond 65504 in float16), naming the tensor and the format's bound.
        """
        quantise = QUANTISERS[self.kind]

        def shared(tensor: torch.Tensor) -> torch.Tensor:
            return quantise(tensor) if tensor.numel() else tensor.clone()

        out = map_tensors(update, shared)
        check_no_overflow(update.tensors, out, self._overflow)
        return out

    def _overflow(self, name: str, tensor: torch.Tensor) -> GradleakError:
        """The one line for a tensor whose finite values the coarse format cannot hold."""
        largest = float(tensor[torch.isfinite(tensor)].abs().max())
        if self.kind in QUANTISED_MAX:
            bound, what = QUANTISED_MAX[self.kind], self.kind.value
            fix = f"share it as precision:{PrecisionKind.INT8.value} (scaled per tensor) instead"
        else:  # int8 and sign scale in float64: only values near float64's largest overflow
            bound, what = torch.finfo(tensor.dtype).max, "its scaling"
            fix = "scale the update down before sharing it"
        return GradleakError(
            f"defense {self.spec!r} overflows update tensor {name!r}: its values reach "
            f"{largest:.3g}, beyond the {bound:.5g} {what} holds; {fix}"
        )


def parse(args: list[str]) -> LowPrecision:
    """`precision:KIND`."""
    check_count(NAME, args, USAGE, 1, 1)
    return LowPrecision(parse_choice(args[0], PrecisionKind, "precision kind"))
