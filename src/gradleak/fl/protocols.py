"""Protocols by name and the settings that say what the clients do."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from gradleak.core.errors import GradleakError
from gradleak.fl.client import Client
from gradleak.fl.fedadmm import FedADMMClient
from gradleak.fl.fedavg import FedAvgClient
from gradleak.fl.fedsgd import FedSGDClient
from gradleak.fl.local_training import LocalTraining


@dataclass(frozen=True)
class ProtocolSettings:
    """What the clients do: the protocol, its local training, users, ADMM's penalty."""

    name: str = "fedsgd"
    local: LocalTraining | None = None  # fedavg and fedadmm
    users: int = 1
    rho: float = 1.0  # fedadmm
    rounds: int = 1  # the attacked update is the last round's
    model_mode: str = "train"
    share_buffers: bool = False

    def __post_init__(self) -> None:
        if self.name not in PROTOCOLS:
            raise GradleakError(f"protocol {self.name!r} is not one of: {', '.join(PROTOCOLS)}")
        if self.users < 1:
            raise GradleakError(f"--users must be at least 1, got {self.users}")
        if not (self.rho > 0 and math.isfinite(self.rho)):
            raise GradleakError(f"ADMM penalty rho must be positive, got {self.rho}")
        if self.rounds < 1:
            raise GradleakError(f"rounds must be at least 1, got {self.rounds}")
        if self.rounds > 1 and self.name == "fedsgd":
            raise GradleakError(
                "several rounds need a protocol whose update moves the model; "
                "use --protocol fedavg or fedadmm"
            )
        if self.name != "fedsgd" and self.local is None:
            object.__setattr__(self, "local", LocalTraining(lr=DEFAULT_LOCAL_LR))

    def client(self, server_model: nn.Module) -> Client:
        return PROTOCOLS[self.name](server_model, self)

    def describe(self) -> dict[str, object]:
        return {
            "protocol": self.name,
            "users": self.users,
            "rounds": self.rounds,
            "local_training": None if self.local is None else self.local.describe(),
            "rho": self.rho if self.name == "fedadmm" else None,
            "client_model_mode": self.model_mode,
            "buffers_shared": self.share_buffers,
        }


DEFAULT_LOCAL_LR = 0.01


ClientFactory = Callable[[nn.Module, ProtocolSettings], Client]


def _fedsgd(model: nn.Module, s: ProtocolSettings) -> Client:
    return FedSGDClient(model, model_mode=s.model_mode, share_buffers=s.share_buffers)


def _fedavg(model: nn.Module, s: ProtocolSettings) -> Client:
    assert s.local is not None  # set in ProtocolSettings.__post_init__
    return FedAvgClient(model, s.local, model_mode=s.model_mode, share_buffers=s.share_buffers)


def _fedadmm(model: nn.Module, s: ProtocolSettings) -> Client:
    assert s.local is not None
    return FedADMMClient(
        model, s.local, rho=s.rho, model_mode=s.model_mode, share_buffers=s.share_buffers
    )


PROTOCOLS: dict[str, ClientFactory] = {
    "fedsgd": _fedsgd,
    "fedavg": _fedavg,
    "fedadmm": _fedadmm,
}
