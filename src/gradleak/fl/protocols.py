"""Protocols as objects: what each protocol's clients share, how the server and peers step
with it, and how an attacker replays it. A new protocol is one module (its client and its
replay) plus one entry in `PROTOCOLS`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from gradleak.core.errors import GradleakError
from gradleak.core.knowledge import GUESSABLE, Grants, Knowledge
from gradleak.core.update import UpdateKind
from gradleak.fl import fedadmm, fedavg, fedsgd
from gradleak.fl.client import Client
from gradleak.fl.local_training import LocalTraining
from gradleak.fl.replay import Replay

DEFAULT_LOCAL_LR = 0.01

# How a model moves by one shared tensor: (parameter, update tensor, SGD step size) → new value.
Step = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]


def _descend(param: torch.Tensor, gradient: torch.Tensor, lr: float) -> torch.Tensor:
    return param - lr * gradient


def _add(param: torch.Tensor, difference: torch.Tensor, lr: float) -> torch.Tensor:
    return param + difference


@dataclass(frozen=True)
class Protocol:
    """One federated protocol.

    Attributes:
        name: the protocol's name on the command line.
        shares: the kind of update its clients send.
        new_client: builds one client from the server's model and the settings.
        replay: the attacker's replay of its clients, from what the threat model grants
            (`who` names the attack in errors).
        step: how a model moves by one of its updates (a gradient needs a step size).
        moves_model: the server adds the mean update to its model, so rounds follow rounds.
        peer_to_peer: peers can run it without a central server.
        belief_used: the fields of the attacker's belief of the local training that the
            replay reads (guesses of other fields would be ignored, so they are refused).
        trains_locally: its clients train locally (steps, epochs, mini-batches, a rate).
        penalised: its clients take ADMM's penalty ρ.
    """

    name: str
    shares: UpdateKind
    new_client: Callable[[nn.Module, ProtocolSettings], Client]
    replay: Callable[[Knowledge, str], Replay]
    step: Step
    moves_model: bool
    peer_to_peer: bool
    belief_used: frozenset[str]
    trains_locally: bool
    penalised: bool = False


PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol(
            "fedsgd",
            UpdateKind.GRADIENT,
            fedsgd.client,
            fedsgd.replay,
            _descend,
            moves_model=False,
            peer_to_peer=True,
            belief_used=frozenset(),
            trains_locally=False,
        ),
        Protocol(
            "fedavg",
            UpdateKind.WEIGHT_DELTA,
            fedavg.client,
            fedavg.replay,
            _add,
            moves_model=True,
            peer_to_peer=True,
            belief_used=frozenset(GUESSABLE),
            trains_locally=True,
        ),
        # FedADMM's dual state assumes one central server: no peer-to-peer variant.
        Protocol(
            "fedadmm",
            UpdateKind.ADMM_INCREMENT,
            fedadmm.client,
            fedadmm.replay,
            _add,
            moves_model=True,
            peer_to_peer=False,
            belief_used=frozenset({"lr"}),
            trains_locally=True,
            penalised=True,
        ),
    )
}


def get_protocol(name: str) -> Protocol:
    """The protocol called `name`.

    Raises:
        GradleakError: no protocol has that name.
    """
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise GradleakError(f"protocol {name!r} is not one of: {', '.join(PROTOCOLS)}") from None


def protocol_sharing(kind: UpdateKind) -> Protocol:
    """The protocol whose clients share updates of `kind`."""
    return next(p for p in PROTOCOLS.values() if p.shares is kind)


def protocols_read_by(kinds: frozenset[UpdateKind]) -> list[Protocol]:
    """The protocols whose updates an attack reading `kinds` can attack, in registry order."""
    return [p for p in PROTOCOLS.values() if p.shares in kinds]


@dataclass(frozen=True)
class ProtocolSettings:
    """What the clients do: the protocol, its local training, users, ADMM's penalty.

    Args:
        name: a protocol of `PROTOCOLS`.
        local: the local training (protocols that train locally; default one SGD step
            over all samples at `DEFAULT_LOCAL_LR`).
        users: how many users' updates the server averages.
        rho: FedADMM's penalty ρ.
        rounds: the attacked update is that of this round.
        model_mode: the clients' batch-norm mode.
        share_buffers: clients send their batch-norm statistics along.

    Raises:
        GradleakError: an unknown protocol or an impossible setting, in one line.
    """

    name: str = "fedsgd"
    local: LocalTraining | None = None  # fedavg and fedadmm
    users: int = 1
    rho: float = 1.0  # fedadmm
    rounds: int = 1  # the attacked update is the last round's
    model_mode: str = "train"
    share_buffers: bool = False

    def __post_init__(self) -> None:
        protocol = get_protocol(self.name)
        if self.users < 1:
            raise GradleakError(f"--users must be at least 1, got {self.users}")
        if not (self.rho > 0 and math.isfinite(self.rho)):
            raise GradleakError(f"ADMM penalty rho must be positive, got {self.rho}")
        if self.rounds < 1:
            raise GradleakError(f"rounds must be at least 1, got {self.rounds}")
        if self.rounds > 1 and not protocol.moves_model:
            movers = " or ".join(p.name for p in PROTOCOLS.values() if p.moves_model)
            raise GradleakError(
                "several rounds need a protocol whose update moves the model; "
                f"use --protocol {movers}"
            )
        if protocol.trains_locally and self.local is None:
            object.__setattr__(self, "local", LocalTraining(lr=DEFAULT_LOCAL_LR))

    @property
    def protocol(self) -> Protocol:
        return PROTOCOLS[self.name]

    def client(self, server_model: nn.Module) -> Client:
        """A new client of this protocol, created from the server's model."""
        return self.protocol.new_client(server_model, self)

    def attacker_belief(
        self, grants: Grants, samples_per_user: int
    ) -> tuple[LocalTraining | None, bool]:
        """The attacker's belief of the local training, and whether it is a guess.

        Without guesses the attacker knows the protocol's local training. Guessing steps or
        epochs replaces both; other guesses replace their own setting only.

        Raises:
            GradleakError: a guess for a protocol without local training, or a guessed
                mini-batch larger than a user's samples.
        """
        guessed = grants.guessed()
        if self.local is None:
            if guessed:
                trainers = " or ".join(p.name for p in PROTOCOLS.values() if p.trains_locally)
                raise GradleakError(
                    f"{_guess_flag(guessed[0])} guesses local training, which {self.name} "
                    f"does not do; use --protocol {trainers}"
                )
            return None, False
        if not guessed:
            return self.local, False
        guess = grants.local_guess
        changes: dict[str, object] = {
            k: guess[k] for k in ("lr", "batch_size") if guess.get(k) is not None
        }
        if guess.get("steps") is not None or guess.get("epochs") is not None:
            changes.update(steps=guess.get("steps"), epochs=guess.get("epochs"))
        belief = dataclasses.replace(self.local, **changes)
        belief.check(samples_per_user, "--guess-local-batch-size")
        return belief, True

    def refuse_ignored_guesses(self, grants: Grants, who: str) -> None:
        """Refuse guesses of settings this protocol's replay does not read.

        A guess that changes nothing would still mark the run as guessed, so it is an error.

        Args:
            grants: the threat model's grants and guesses.
            who: the attack that would replay the clients, named in the error.

        Raises:
            GradleakError: naming the guess to drop and the guesses that do count.
        """
        used = self.protocol.belief_used
        ignored = [k for k in grants.guessed() if k not in used]
        if ignored and used:
            words = " and ".join(_FIELD_WORDS[k] for k in GUESSABLE if k in used)
            flags = " ".join(_guess_flag(k) for k in GUESSABLE if k in used)
            raise GradleakError(
                f"{who} uses only the local {words} of the attacker's belief; drop "
                f"{_guess_flag(ignored[0])} (use {flags})"
            )

    def describe(self) -> dict[str, object]:
        return {
            "protocol": self.name,
            "users": self.users,
            "rounds": self.rounds,
            "local_training": None if self.local is None else self.local.describe(),
            "rho": self.rho if self.protocol.penalised else None,
            "client_model_mode": self.model_mode,
            "buffers_shared": self.share_buffers,
        }


_FIELD_WORDS = {
    "steps": "steps",
    "epochs": "epochs",
    "batch_size": "batch size",
    "lr": "learning rate",
}


def _guess_flag(key: str) -> str:
    return "--guess-local-" + key.replace("_", "-")
