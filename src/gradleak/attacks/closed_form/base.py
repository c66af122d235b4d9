"""What closed-form attacks (analytic, R-GAP) share: no iterations, plain gradients only."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

from gradleak.core.errors import GradleakError
from gradleak.core.settings import replace_checked
from gradleak.core.update import UpdateKind


def check_no_iterations(iterations: int, restarts: int, who: str) -> None:
    """Closed forms solve once: refuse settings that ask them to iterate."""
    if iterations != 0 or restarts != 1:
        raise GradleakError(f"{who} does not iterate; leave iterations at 0 and restarts at 1")


_Attack = TypeVar("_Attack", bound="ClosedFormAttack")


class ClosedFormAttack:
    """Name, validated config, `reads` and `with_options` for a closed-form attack."""

    default_name: ClassVar[str]
    config_type: ClassVar[type]

    def __init__(self, name: str | None = None, config: Any = None) -> None:
        self.name = name or self.default_name
        self.config = (config or self.config_type()).validate()

    @property
    def reads(self) -> frozenset[UpdateKind]:
        """Only plain gradients: a weight difference mixes several steps' inputs."""
        return frozenset({UpdateKind.GRADIENT})

    def with_options(self: _Attack, options: Mapping[str, Any]) -> _Attack:
        """A copy with options overridden (unknown keys are errors)."""
        config = replace_checked(self.config, options, f"attack '{self.name}' options")
        return type(self)(self.name, config)
