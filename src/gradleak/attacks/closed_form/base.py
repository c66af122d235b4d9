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
    """Name, validated config, `reads` and `with_options` for a closed-form attack.

    A subclass names its default name (`default_name`), its config dataclass
    (`config_type`, with a `validate()` that returns the config) and its `reconstruct`.
    Closed forms solve once: their configs keep `iterations` at 0 and `restarts` at 1.

    Args:
        name: the attack's name (None: `default_name`).
        config: its settings, a `config_type` (None: the defaults).

    Raises:
        GradleakError: when `config` is invalid (the config's `validate`).
    """

    default_name: ClassVar[str]
    config_type: ClassVar[type]

    def __init__(self, name: str | None = None, config: Any = None) -> None:
        self.name = name or self.default_name
        self.config = (config or self.config_type()).validate()

    @property
    def reads(self) -> frozenset[UpdateKind]:
        """Only plain gradients: a weight difference mixes several steps' inputs.

        Returns:
            {GRADIENT}.
        """
        return frozenset({UpdateKind.GRADIENT})

    def with_options(self: _Attack, options: Mapping[str, Any]) -> _Attack:
        """A copy with options overridden (unknown keys are errors).

        Args:
            options: fields of the config mapped to new values; a float field also takes
                an integer or a numeric string.

        Returns:
            A new attack of the same class and name; this one is left unchanged.

        Raises:
            GradleakError: when a key is not a field of the config.
            GradleakError: when a value does not have, or convert to, the field's type.
            GradleakError: when the new config is invalid (e.g. iterations not 0).
        """
        config = replace_checked(self.config, options, f"attack '{self.name}' options")
        return type(self)(self.name, config)
