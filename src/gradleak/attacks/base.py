"""What every attack offers: a name, its settings, and reconstruct(update, model, knowledge)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from torch import nn

from gradleak.attacks.engine.hooks import Observer
from gradleak.attacks.reconstruction import Reconstruction
from gradleak.core.knowledge import Knowledge
from gradleak.core.update import SharedUpdate, UpdateKind


class Attack(Protocol):
    """An attack sees only the shared update, the server's model and the granted knowledge."""

    name: str
    config: Any  # a frozen dataclass; `iterations` and `restarts` are always there

    @property
    def reads(self) -> frozenset[UpdateKind]:
        """The kinds of update this attack can attack."""
        ...

    def with_options(self, options: Mapping[str, Any]) -> Attack: ...

    def reconstruct(
        self,
        update: SharedUpdate,
        model: nn.Module,
        knowledge: Knowledge,
        *,
        seed: int = 0,
        observer: Observer | None = None,
        progress: bool = True,
    ) -> Reconstruction: ...
