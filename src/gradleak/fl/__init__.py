"""Federated protocols: the clients that produce updates, aggregation and simulated rounds."""

from gradleak.fl.aggregation import aggregate
from gradleak.fl.client import Client
from gradleak.fl.fedadmm import FedADMMClient
from gradleak.fl.fedavg import FedAvgClient
from gradleak.fl.fedsgd import FedSGDClient
from gradleak.fl.local_training import LocalTraining
from gradleak.fl.protocols import PROTOCOLS, ProtocolSettings
from gradleak.fl.rounds import RoundResult, simulate, split_users

__all__ = [
    "PROTOCOLS",
    "Client",
    "FedADMMClient",
    "FedAvgClient",
    "FedSGDClient",
    "LocalTraining",
    "ProtocolSettings",
    "RoundResult",
    "aggregate",
    "simulate",
    "split_users",
]
