"""Federated protocols and the update a client shares."""

from gradleak.fl.client import FedSGDClient, PrivateBatch
from gradleak.fl.update import SharedUpdate, UpdateKind

__all__ = ["FedSGDClient", "PrivateBatch", "SharedUpdate", "UpdateKind"]
