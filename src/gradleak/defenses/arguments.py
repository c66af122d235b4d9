"""Reading the colon-separated arguments of a defense spec, with one-line errors."""

from __future__ import annotations

import enum
from typing import TypeVar

from gradleak.core.errors import GradleakError

E = TypeVar("E", bound=enum.Enum)


def check_count(name: str, args: list[str], usage: str, least: int, most: int) -> None:
    """Fail unless `least <= len(args) <= most`, naming the spelling to use."""
    if least <= len(args) <= most:
        return
    wanted = str(least) if least == most else f"{least} to {most}"
    given = ":".join([name, *args])
    raise GradleakError(
        f"defense {name!r} takes {wanted} argument(s), got {len(args)} in {given!r}; "
        f"spell it {usage}"
    )


def parse_number(text: str, what: str, allowed: str) -> float:
    """A float from `text`, or an error naming `what` it is and the `allowed` values."""
    try:
        return float(text)
    except ValueError:
        raise GradleakError(f"{what} must be {allowed}, got {text!r}") from None


def parse_choice(text: str, choices: type[E], what: str) -> E:
    """The member of the str-valued enum `choices` spelled `text` (case-insensitive)."""
    try:
        return choices(text.strip().lower())
    except ValueError:
        allowed = ", ".join(str(c.value) for c in choices)
        raise GradleakError(f"unknown {what} {text!r}; choose one of: {allowed}") from None
