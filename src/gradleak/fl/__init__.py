"""Federated protocols and the update a client shares."""

from gradleak.fl.aggregation import aggregate
from gradleak.fl.client import Client, FedSGDClient, PrivateBatch
from gradleak.fl.fedadmm import FedADMMClient
from gradleak.fl.fedavg import FedAvgClient
from gradleak.fl.local_training import LocalTraining
from gradleak.fl.protocols import PROTOCOLS, ProtocolSettings, RoundResult, simulate, split_users
from gradleak.fl.update import SharedUpdate, UpdateKind

__all__ = [
    "PROTOCOLS",
    "Client",
    "FedADMMClient",
    "FedAvgClient",
    "FedSGDClient",
    "LocalTraining",
    "PrivateBatch",
    "ProtocolSettings",
    "RoundResult",
    "SharedUpdate",
    "UpdateKind",
    "aggregate",
    "simulate",
    "split_users",
]
