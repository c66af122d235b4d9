"""Kinds of data by name: what the engine, scoring and rendering need to know of each."""

from __future__ import annotations

from gradleak.core.errors import GradleakError
from gradleak.modalities.base import Modality
from gradleak.modalities.image import ImageModality
from gradleak.modalities.text import TextModality

MODALITIES: dict[str, Modality] = {"image": ImageModality(), "text": TextModality()}


def get_modality(name: str) -> Modality:
    """The modality called `name`.

    Raises:
        GradleakError: no modality has that name.
    """
    try:
        return MODALITIES[name]
    except KeyError:
        raise GradleakError(
            f"unknown modality {name!r}; choose one of: {', '.join(MODALITIES)}"
        ) from None


__all__ = ["MODALITIES", "ImageModality", "Modality", "TextModality", "get_modality"]
