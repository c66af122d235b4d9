"""The key types every part of gradleak shares: errors, settings, what is shared and known."""

from gradleak.core.batch import PrivateBatch
from gradleak.core.errors import GradleakError
from gradleak.core.knowledge import Knowledge, Requirement
from gradleak.core.update import SharedUpdate, UpdateKind

__all__ = [
    "GradleakError",
    "Knowledge",
    "PrivateBatch",
    "Requirement",
    "SharedUpdate",
    "UpdateKind",
]
