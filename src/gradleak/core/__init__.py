"""The key types every part of gradleak shares: errors, settings, what is shared and known.

The names below are loaded on first use (PEP 562): `gradleak.core.errors` and the other
light modules are imported by the command line before it knows the command, and importing
this package must not import torch for them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gradleak.core.batch import PrivateBatch
    from gradleak.core.errors import GradleakError
    from gradleak.core.knowledge import (
        DataFacts,
        Grants,
        Knowledge,
        Requirement,
        grant_knowledge,
    )
    from gradleak.core.update import SharedUpdate, UpdateKind

# Each name and the module that defines it.
_HOMES = {
    "DataFacts": "gradleak.core.knowledge",
    "GradleakError": "gradleak.core.errors",
    "Grants": "gradleak.core.knowledge",
    "Knowledge": "gradleak.core.knowledge",
    "PrivateBatch": "gradleak.core.batch",
    "Requirement": "gradleak.core.knowledge",
    "SharedUpdate": "gradleak.core.update",
    "UpdateKind": "gradleak.core.update",
    "grant_knowledge": "gradleak.core.knowledge",
}

__all__ = [
    "DataFacts",
    "GradleakError",
    "Grants",
    "Knowledge",
    "PrivateBatch",
    "Requirement",
    "SharedUpdate",
    "UpdateKind",
    "grant_knowledge",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
