"""Protocols as objects: what each protocol's clients share, how the server and peers step
with it, and how an attacker reads it. A new protocol is one module (its client and its
replay) plus one entry in `PROTOCOLS`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from gradleak.core.errors import GradleakError
from gradleak.core.knowledge import GUESSABLE, AdmmKnowledge, ClientState, Grants, Knowledge
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


# The name of every protocol's first reading: its clients replayed as they compute.
REPLAY = "replay"
# The settings of the attacker's belief a reading may use: the local training's, and ρ.
BELIEFS = (*GUESSABLE, "rho")


@dataclass(frozen=True)
class Reading:
    """One way for an attack to read a protocol's updates.

    Attributes:
        name: the reading's name (`replay` for the clients replayed as they compute).
        replay: builds the attacker's `Replay` from what the threat model grants (`who`
            names the attack in errors).
        belief_used: the settings of the attacker's belief (`BELIEFS`) it reads; guesses of
            others would be ignored, so they are refused.
        needs_client_state: it starts from each client's state, which after round 1 the
            threat model must grant.
        help: what it does, in one line.
    """

    name: str
    replay: Callable[[Knowledge, str], Replay]
    belief_used: frozenset[str]
    needs_client_state: bool = False
    help: str = ""


@dataclass(frozen=True)
class Protocol:
    """One federated protocol.

    Attributes:
        name: the protocol's name on the command line.
        shares: the kind of update its clients send.
        new_client: builds one client from the server's model and the settings.
        readings: how attacks may read its updates; the first, `replay`, replays its
            clients as they compute and is the default.
        step: how a model moves by one of its updates (a gradient needs a step size).
        moves_model: the server adds the mean update to its model, so rounds follow rounds.
        peer_to_peer: peers can run it without a central server.
        trains_locally: its clients train locally (steps, epochs, mini-batches, a rate).
        penalised: its clients take ADMM's penalty ρ.
        client_state: a client's own state at the start of the round it last computed
            (None: its clients keep no state between rounds).
    """

    name: str
    shares: UpdateKind
    new_client: Callable[[nn.Module, ProtocolSettings], Client]
    readings: tuple[Reading, ...]
    step: Step
    moves_model: bool
    peer_to_peer: bool
    trains_locally: bool
    penalised: bool = False
    client_state: Callable[[Client], ClientState] | None = None

    def reading(self, name: str = REPLAY) -> Reading:
        """The reading called `name`.

        Raises:
            GradleakError: the protocol offers no reading of that name.
        """
        for reading in self.readings:
            if reading.name == name:
                return reading
        names = ", ".join(r.name for r in self.readings)
        raise GradleakError(f"{self.name} updates are read as: {names}; not {name!r}")

    @property
    def replay(self) -> Callable[[Knowledge, str], Replay]:
        """The attacker's replay of its clients (the default reading's)."""
        return self.readings[0].replay

    @property
    def belief_used(self) -> frozenset[str]:
        """The settings of the attacker's belief that the replay of its clients reads."""
        return self.readings[0].belief_used


PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol(
            "fedsgd",
            UpdateKind.GRADIENT,
            fedsgd.client,
            (Reading(REPLAY, fedsgd.replay, frozenset(), help="one gradient per user"),),
            _descend,
            moves_model=False,
            peer_to_peer=True,
            trains_locally=False,
        ),
        Protocol(
            "fedavg",
            UpdateKind.WEIGHT_DELTA,
            fedavg.client,
            (
                Reading(
                    REPLAY,
                    fedavg.replay,
                    frozenset(GUESSABLE),
                    help="the local SGD steps unrolled",
                ),
            ),
            _add,
            moves_model=True,
            peer_to_peer=True,
            trains_locally=True,
        ),
        # FedADMM's dual state assumes one central server: no peer-to-peer variant.
        Protocol(
            "fedadmm",
            UpdateKind.ADMM_INCREMENT,
            fedadmm.client,
            (
                Reading(
                    REPLAY,
                    fedadmm.replay,
                    frozenset(BELIEFS),
                    needs_client_state=True,
                    help="the client's ADMM round replayed from its state; −Δ'/η matched with −Δ/η",
                ),
                Reading(
                    "gradient",
                    fedadmm.gradient_reading,
                    frozenset({"lr"}),
                    help="−Δ/η matched with one plain gradient (twice the gradient in a "
                    "first round of one step)",
                ),
            ),
            _add,
            moves_model=True,
            peer_to_peer=False,
            trains_locally=True,
            penalised=True,
            client_state=fedadmm.round_start_state,
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


def local_training_for(
    protocol: str,
    *,
    steps: int | None,
    epochs: int | None,
    batch_size: int | None,
    lr: float | None,
    client_batch: int,
) -> LocalTraining | None:
    """The clients' local training as a protocol's flags describe it (None: it trains none).

    Args:
        protocol: the protocol's name.
        steps: local SGD steps (None: the default).
        epochs: local epochs instead of steps.
        batch_size: the local mini-batch (None: the whole client batch).
        lr: the local learning rate (None: `DEFAULT_LOCAL_LR`).
        client_batch: the client's batch size, which the mini-batch must fit.

    Returns:
        The local training of a protocol that trains locally, else None.

    Raises:
        GradleakError: an unknown protocol, or a mini-batch the client batch cannot fill.
    """
    if not get_protocol(protocol).trains_locally:
        return None
    local = LocalTraining(
        lr=DEFAULT_LOCAL_LR if lr is None else lr,
        steps=steps,
        epochs=epochs,
        batch_size=batch_size,
    )
    local.check(client_batch, "--local-batch-size")
    return local


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
        self._check_admm_grants(grants)
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

    def admm_belief(
        self, grants: Grants, client_states: Sequence[ClientState] | None = None
    ) -> AdmmKnowledge | None:
        """The attacker's belief of ρ and the clients' state it is granted (FedADMM only).

        Args:
            grants: the threat model's grants and guesses.
            client_states: each user's true state at the start of the attacked round, once
                the earlier rounds ran; granted only with `grants.client_state_known`.

        Returns:
            None for a protocol without ADMM's penalty; else ρ as known or guessed and the
            granted states (None where not granted or not given).

        Raises:
            GradleakError: a guess of ρ or a granted state the protocol does not have.
        """
        self._check_admm_grants(grants)
        if not self.protocol.penalised:
            return None
        states = None
        if grants.client_state_known and client_states is not None:
            states = tuple(client_states)
        rho = self.rho if grants.rho_guess is None else grants.rho_guess
        return AdmmKnowledge(rho, grants.rho_guess is not None, states)

    def client_states(self, clients: Sequence[Client]) -> tuple[ClientState, ...] | None:
        """Each client's own state at the start of the round it last computed.

        Returns:
            One state per client, or None where the protocol's clients keep none.
        """
        state = self.protocol.client_state
        return None if state is None else tuple(state(client) for client in clients)

    def _check_admm_grants(self, grants: Grants) -> None:
        admm = " or ".join(p.name for p in PROTOCOLS.values() if p.penalised)
        if grants.rho_guess is not None and not self.protocol.penalised:
            raise GradleakError(
                f"--guess-admm-rho guesses ADMM's penalty, which {self.name} does not use; "
                f"use --protocol {admm}"
            )
        if grants.rho_guess is not None and not (
            grants.rho_guess > 0 and math.isfinite(grants.rho_guess)
        ):
            raise GradleakError(f"--guess-admm-rho must be positive, got {grants.rho_guess}")
        if grants.client_state_known and self.protocol.client_state is None:
            stateful = " or ".join(p.name for p in PROTOCOLS.values() if p.client_state)
            raise GradleakError(
                f"--client-state-known grants the state clients keep between rounds, but "
                f"{self.name} clients keep none; drop it or use --protocol {stateful}"
            )

    def check_reading(self, grants: Grants, who: str, reading: str = REPLAY) -> None:
        """Refuse, before any data is read, a reading the threat model cannot support.

        Args:
            grants: the threat model's grants and guesses.
            who: the attack that reads the updates, named in the error.
            reading: the name of the protocol's reading the attack uses.

        Raises:
            GradleakError: an unknown reading, a guess the reading ignores, or a later
                round's client state the reading starts from but the threat model does not
                grant (one line naming the fix).
        """
        chosen = self.protocol.reading(reading)
        self.refuse_ignored_guesses(grants, who, reading)
        if chosen.needs_client_state and self.rounds > 1 and not grants.client_state_known:
            others = [r.name for r in self.protocol.readings if not r.needs_client_state]
            other = (
                f", or use --admm-reading {others[0]} (admm_reading: {others[0]} in a config)"
                if others
                else ""
            )
            raise GradleakError(
                f"{who} replays the {self.name} client from its state at the start of round "
                f"{self.rounds}, which the threat model does not grant; add "
                f"--client-state-known (a server that received the client's earlier "
                f"increments can compute it), attack round 1{other}"
            )

    def refuse_ignored_guesses(self, grants: Grants, who: str, reading: str = REPLAY) -> None:
        """Refuse guesses of settings this protocol's reading does not read.

        A guess that changes nothing would still mark the run as guessed, so it is an error.

        Args:
            grants: the threat model's grants and guesses.
            who: the attack that would replay the clients, named in the error.
            reading: the name of the protocol's reading the attack uses.

        Raises:
            GradleakError: naming the guess to drop and the guesses that do count.
        """
        used = self.protocol.reading(reading).belief_used
        guessed = grants.guessed() + (["rho"] if grants.rho_guess is not None else [])
        ignored = [k for k in guessed if k not in used]
        if ignored and used:
            words = " and ".join(_FIELD_WORDS[k] for k in BELIEFS if k in used)
            flags = " ".join(_guess_flag(k) for k in BELIEFS if k in used)
            if reading != REPLAY:
                who = f"{who} with admm_reading {reading}"
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
    "rho": "ADMM penalty",
}


_GUESS_FLAGS = {
    **{key: "--guess-local-" + key.replace("_", "-") for key in GUESSABLE},
    "rho": "--guess-admm-rho",
}


def _guess_flag(key: str) -> str:
    return _GUESS_FLAGS[key]
