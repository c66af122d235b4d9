"""The key types every part of gradleak shares: errors, settings, what is shared and known."""

from gradleak.core.batch import PrivateBatch
from gradleak.core.errors import GradleakError
from gradleak.core.knowledge import DataFacts, Grants, Knowledge, Requirement, grant_knowledge
from gradleak.core.update import SharedUpdate, UpdateKind

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
