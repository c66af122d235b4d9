"""Where tensors compute: `--device auto|cpu|cuda|cuda:N|mps`, resolved and checked once.

A command resolves its device before any work (`resolve_device`); an unavailable device is
refused in one line. Models are built and seeded on the CPU, then moved with the data they
see to the device once (a run's case: `Case.to`); from there the engine, the clients and
the defenses compute where their inputs are, and the metrics score on the CPU. Random draws
that decide results (dummy inputs, defense noise, batch order) come from CPU generators and
are moved, so a seed draws the same numbers whatever the device; results then differ from
the CPU's by float rounding only.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from itertools import chain
from typing import TypeVar

import torch
from torch import nn

from gradleak.core.errors import GradleakError

AUTO = "auto"
CPU = torch.device("cpu")
# The spellings --device accepts, for help texts and errors.
DEVICE_SPELLINGS = "auto, cpu, cuda, cuda:N or mps"
DEVICE_HELP = (
    "where tensors compute: auto (CUDA if present, else MPS, else the CPU; the default), "
    "cpu, cuda, cuda:N or mps; random draws stay on the CPU, so a seed starts alike anywhere"
)
_SPEC = re.compile(r"(?P<kind>cpu|cuda|mps)(:(?P<index>\d+))?")


@dataclass(frozen=True)
class Accelerator:
    """A kind of device torch may offer: how to ask for it and how to say it is missing.

    Attributes:
        available: whether this torch, on this machine, can use it.
        count: how many devices of the kind there are (when available).
        missing: why it is not there, in words (the check torch answered False).
        indexed: whether `kind:N` names one of several devices.
    """

    available: Callable[[], bool]
    count: Callable[[], int]
    missing: str
    indexed: bool


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


# The kinds --device names, and `auto`'s order of preference among them.
ACCELERATORS: dict[str, Accelerator] = {
    "cuda": Accelerator(
        torch.cuda.is_available,
        torch.cuda.device_count,
        "this torch has no CUDA (torch.cuda.is_available() is False)",
        indexed=True,
    ),
    "mps": Accelerator(
        _mps_available,
        lambda: 1,
        "this torch has no MPS (torch.backends.mps.is_available() is False)",
        indexed=False,
    ),
    "cpu": Accelerator(lambda: True, lambda: 1, "", indexed=False),
}
AUTO_ORDER = ("cuda", "mps", "cpu")


def resolve_device(spec: str | torch.device) -> torch.device:
    """The device `spec` names, checked to be usable here.

    Args:
        spec: auto (the first of CUDA, MPS and CPU that is present), cpu, cuda (the
            current CUDA device), cuda:N, mps; or a torch.device of those kinds.

    Returns:
        The device, with its index where it has one (cuda:0, not cuda), so that records
        name the device used.

    Raises:
        GradleakError: an unknown spelling, or a device this torch or machine does not
            have, in one line naming the fix.
    """
    text = device_spelling(spec)
    if text == AUTO:
        text = next(kind for kind in AUTO_ORDER if ACCELERATORS[kind].available())
    match = _SPEC.fullmatch(text)
    assert match is not None  # device_spelling checked it
    kind, index = match["kind"], match["index"]
    accelerator = ACCELERATORS[kind]
    if not accelerator.available():
        raise GradleakError(f"--device {spec}: {accelerator.missing}; use --device cpu or auto")
    if not accelerator.indexed:
        return torch.device(kind)
    count = accelerator.count()
    number = torch.cuda.current_device() if index is None else int(index)
    if number >= count:
        have = ", ".join(f"{kind}:{i}" for i in range(count))
        raise GradleakError(
            f"--device {spec}: this machine has {count} {kind.upper()} device(s) ({have}); "
            f"use one of them or auto"
        )
    return torch.device(kind, number)


def device_spelling(spec: str | torch.device) -> str:
    """`spec` checked to spell a device, lower-cased; whether this machine has it is not
    asked (for work that runs elsewhere, e.g. Ray workers).

    Raises:
        GradleakError: a spelling that names no device --device accepts.
    """
    text = str(spec).strip().lower()
    if text == AUTO:
        return text
    match = _SPEC.fullmatch(text)
    if match is None:
        raise GradleakError(f"--device {spec!r} is not a device; use {DEVICE_SPELLINGS}")
    kind = match["kind"]
    if match["index"] is not None and not ACCELERATORS[kind].indexed:
        raise GradleakError(f"--device {spec}: {kind} takes no index; use --device {kind}")
    return text


def check_device(spec: str | torch.device) -> str:
    """`spec` resolved and spelled as records keep it (e.g. 'cuda:0', 'cpu').

    Raises:
        GradleakError: as `resolve_device`.
    """
    return str(resolve_device(spec))


def device_name(device: torch.device) -> str:
    """The device in words for records: the GPU's name, or the kind ('cpu', 'mps')."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type


Module = TypeVar("Module", bound=nn.Module)


def module_on(module: Module, device: torch.device) -> Module:
    """`module` itself when it is on `device` already, else a copy moved there (the
    original stays where it is)."""
    if module_device(module) == device:
        return module
    return copy.deepcopy(module).to(device)


def module_device(module: nn.Module) -> torch.device:
    """Where a module's parameters (else buffers) live; the CPU for a module with neither."""
    first = next(chain(module.parameters(), module.buffers()), None)
    return CPU if first is None else first.device


def physical_memory() -> int | None:
    """Bytes of this machine's memory, or None where the platform does not say."""
    names = getattr(os, "sysconf_names", {})
    if "SC_PHYS_PAGES" not in names or "SC_PAGE_SIZE" not in names:
        return None
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
