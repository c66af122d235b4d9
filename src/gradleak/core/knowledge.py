"""What the attacker knows: an explicit, validated record, the checks attacks use, and the
one function that grants it (`grant_knowledge`) for a run, a peer or a study.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from gradleak.core.errors import GradleakError

if TYPE_CHECKING:
    from gradleak.fl.local_training import LocalTraining
    from gradleak.fl.protocols import ProtocolSettings


class Requirement(str, enum.Enum):
    """A piece of knowledge an attack may need beyond the update and the server's model."""

    LABELS = "labels"
    SINGLE_SAMPLE = "single_sample"
    LOCAL_TRAINING = "local_training"
    # FedADMM: the penalty ρ and each user's x and π at the start of the attacked round.
    ADMM_STATE = "admm_state"
    # A malicious server: it may alter the model it sends the clients (Robbing the Fed).
    MODIFY_MODEL = "modify_model"


@dataclass(frozen=True, eq=False)
class ClientState:
    """A FedADMM client's own variables at the start of a round, by parameter name.

    Attributes:
        primal: the client's model x (it keeps it between rounds).
        dual: its dual variable π.
    """

    primal: Mapping[str, torch.Tensor] = field(repr=False)
    dual: Mapping[str, torch.Tensor] = field(repr=False)

    def __post_init__(self) -> None:
        if set(self.primal) != set(self.dual):
            raise GradleakError("a client state needs x and π for the same parameters")
        # Detached copies: what the attacker is granted does not change with the client.
        for name in ("primal", "dual"):
            copied = {n: t.detach().clone() for n, t in getattr(self, name).items()}
            object.__setattr__(self, name, copied)


@dataclass(frozen=True)
class AdmmKnowledge:
    """What the attacker knows of FedADMM clients beyond their local training.

    Attributes:
        rho: the attacker's belief of the penalty ρ.
        rho_guessed: ρ is the attacker's guess rather than the protocol's known setting.
        states: each user's x and π at the start of the attacked round, where the threat
            model grants them; None: not granted (round 1 starts from the public x = z,
            π = 0, so nothing needs granting there).
    """

    rho: float
    rho_guessed: bool = False
    states: tuple[ClientState, ...] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not (self.rho > 0 and math.isfinite(self.rho)):
            raise GradleakError(f"ADMM penalty rho must be positive, got {self.rho}")


@dataclass(frozen=True)
class Knowledge:
    """Facts the threat model grants the attacker about the client's data and training."""

    data_shape: tuple[int, ...]
    num_classes: int
    batch_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    model_mode: str = "train"
    labels: torch.Tensor | None = field(default=None, repr=False)
    dataset: str = ""
    # How many users' updates were averaged (the server knows whom it aggregated);
    # batch_size counts the samples of all of them together.
    num_users: int = 1
    # The attacker's belief about the clients' local training (FedAvg, FedADMM), and
    # whether it is a guess rather than the protocol's known setting.
    local_training: LocalTraining | None = None
    local_training_guessed: bool = False
    # Whether model_mode is the attacker's guess rather than the client's known mode.
    model_mode_guessed: bool = False
    # The kind of data (a name in gradleak.modalities): how inputs start, what bounds them,
    # which prior applies, and how the evaluation side scores and shows them.
    modality: str = "image"
    # The attacked round: the server knows which round's update it holds.
    attacked_round: int = 1
    # FedADMM: the attacker's belief of ρ and the clients' state it is granted (None for
    # protocols without ADMM).
    admm: AdmmKnowledge | None = None
    # Text: each sequence's length in tokens ([CLS] and [SEP] included), where the threat
    # model grants it (TAG and LAMP assume it known); None: only the padded length
    # data_shape[0] is known (it can be read from the position embeddings' gradient).
    sequence_lengths: tuple[int, ...] | None = None
    # A malicious server: it may alter the model it sends before the clients train on it
    # (an honest-but-curious one only reads what they send back).
    server_modifies_model: bool = False

    def __post_init__(self) -> None:
        if not self.data_shape or any(int(s) < 1 for s in self.data_shape):
            raise GradleakError(f"data_shape must hold positive sizes, got {self.data_shape}")
        if self.modality == "text":
            self._check_text()
        else:
            self._check_image()
        if self.num_classes < 2:
            raise GradleakError(f"num_classes is {self.num_classes}; it must be at least 2")
        if self.batch_size < 1:
            raise GradleakError(f"batch_size is {self.batch_size}; it must be at least 1")
        if self.model_mode not in ("train", "eval"):
            raise GradleakError(f"model_mode {self.model_mode!r} is not one of: train, eval")
        if self.num_users < 1 or self.batch_size % self.num_users:
            raise GradleakError(
                f"batch_size {self.batch_size} does not split evenly over {self.num_users} users"
            )
        if self.attacked_round < 1:
            raise GradleakError(f"attacked_round must be at least 1, got {self.attacked_round}")
        states = None if self.admm is None else self.admm.states
        if states is not None and len(states) != self.num_users:
            raise GradleakError(
                f"{len(states)} client states granted for {self.num_users} users; give one per user"
            )
        if self.labels is not None:
            labels = self.labels.detach().clone().long()
            if labels.shape != (self.batch_size,):
                raise GradleakError(
                    f"known labels have shape {tuple(labels.shape)}; expected ({self.batch_size},)"
                )
            object.__setattr__(self, "labels", labels)

    def _check_image(self) -> None:
        if len(self.data_shape) != 3:
            raise GradleakError(
                f"data_shape must be (channels, height, width), got {self.data_shape}"
            )
        channels = self.data_shape[0]
        if len(self.mean) != channels or len(self.std) != channels:
            raise GradleakError(
                f"normalisation has {len(self.mean)} means and {len(self.std)} stds for "
                f"{channels} channels; give one per channel"
            )
        if any(s <= 0 for s in self.std):
            raise GradleakError("normalisation std must be positive in every channel")
        if self.sequence_lengths is not None:
            raise GradleakError("sequence lengths describe text; images have none")

    def _check_text(self) -> None:
        # One sequence as the embedding attacks optimise it: (padded length, hidden size).
        if len(self.data_shape) != 2:
            raise GradleakError(
                f"text data_shape must be (length, hidden size), got {self.data_shape}"
            )
        if self.mean or self.std:
            raise GradleakError("text has no pixel normalisation; leave mean and std empty")
        lengths = self.sequence_lengths
        if lengths is not None and (
            len(lengths) != self.batch_size
            or any(not 1 <= n <= self.data_shape[0] for n in lengths)
        ):
            raise GradleakError(
                f"granted sequence lengths {list(lengths)} do not fit {self.batch_size} "
                f"sequences of at most {self.data_shape[0]} tokens"
            )

    @property
    def labels_known(self) -> bool:
        return self.labels is not None

    def grants(self, requirement: Requirement) -> bool:
        checks = {
            Requirement.LABELS: self.labels_known,
            Requirement.SINGLE_SAMPLE: self.batch_size == 1,
            Requirement.LOCAL_TRAINING: self.local_training is not None,
            Requirement.ADMM_STATE: self.admm is not None
            and (self.attacked_round == 1 or self.admm.states is not None),
            Requirement.MODIFY_MODEL: self.server_modifies_model,
        }
        return checks[requirement]

    def require(self, requirements: frozenset[Requirement] | set[Requirement], who: str) -> None:
        """Refuse to run `who` when the threat model does not grant what it needs."""
        hints = {
            Requirement.LABELS: "grant them with --labels-known or pick a label strategy "
            "that recovers labels",
            Requirement.SINGLE_SAMPLE: "use --batch-size 1"
            + (" and --users 1" if self.num_users > 1 else ""),
            Requirement.LOCAL_TRAINING: "describe the client's local training (--local-steps "
            "or --local-epochs, --local-lr), or the attacker's guess of it",
            # A server that received a client's earlier increments can compute its state:
            # x' = (Δ + x + z)/2 and π' = π + ρ(x' − z) from x = z, π = 0 in round 1.
            Requirement.ADMM_STATE: "grant each client's x and π at the start of round "
            f"{self.attacked_round} with --client-state-known, or attack round 1",
            Requirement.MODIFY_MODEL: "the threat model has an honest server; grant a "
            "malicious one that alters the model it sends with --malicious-server",
        }
        for requirement in sorted(requirements, key=lambda r: r.value):
            if not self.grants(requirement):
                raise GradleakError(
                    f"{who} needs {requirement.value} but the threat model does not grant it; "
                    f"{hints[requirement]}"
                )

    def data_facts(self) -> DataFacts:
        """The data's format, as granted."""
        return DataFacts(
            self.data_shape, self.num_classes, self.mean, self.std, self.dataset, self.modality
        )

    def describe(self) -> dict[str, object]:
        """JSON-safe summary for reports (the labels themselves are summarised, not listed)."""
        return {
            "data_shape": list(self.data_shape),
            "num_classes": self.num_classes,
            "batch_size": self.batch_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "model_mode": self.model_mode,
            "labels_known": self.labels_known,
            "dataset": self.dataset,
            "num_users": self.num_users,
            "local_training": None
            if self.local_training is None
            else self.local_training.describe(),
            "local_training_guessed": self.local_training_guessed,
            "model_mode_guessed": self.model_mode_guessed,
            "attacked_round": self.attacked_round,
            "admm": None if self.admm is None else self._describe_admm(self.admm),
            "server_modifies_model": self.server_modifies_model,
            **(self._describe_text() if self.modality == "text" else {}),
        }

    def _describe_text(self) -> dict[str, object]:
        """Text: the modality, and whether each sequence's length is granted."""
        lengths = self.sequence_lengths
        return {
            "modality": "text",
            "sequence_lengths": "not granted (padded length only)"
            if lengths is None
            else f"granted: {list(lengths)}",
        }

    def _describe_admm(self, admm: AdmmKnowledge) -> dict[str, object]:
        """ρ as believed, and which client state a replay of the FedADMM client starts from."""
        if admm.states is not None:
            state = f"granted: each user's x and π at the start of round {self.attacked_round}"
        elif self.attacked_round == 1:
            state = "round 1: x = z, π = 0 (public)"
        else:
            state = "not granted"
        return {"rho": admm.rho, "rho_guessed": admm.rho_guessed, "client_state": state}


@dataclass(frozen=True)
class DataFacts:
    """The format of the clients' data, which every threat model here grants the attacker.

    Attributes:
        shape: one input's shape as attacked: images (channels, height, width), text
            (padded length, hidden size).
        num_classes: the classes of the model's output.
        mean: per-channel normalisation mean.
        std: per-channel normalisation standard deviation.
        name: the name of the normalisation statistics (the dataset's).
        modality: the kind of data (a name in gradleak.modalities).
    """

    shape: tuple[int, ...]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str = ""
    modality: str = "image"


# The local-training settings an attacker may guess, in the order flags are reported.
GUESSABLE = ("steps", "epochs", "batch_size", "lr")


@dataclass(frozen=True)
class Grants:
    """What a threat model grants beyond the data's format, and where the attacker guesses.

    Attributes:
        labels_known: the attacker is told the true labels.
        local_guess: the attacker's guesses of the local training (GUESSABLE keys; a
            missing key is known, i.e. the protocol's true setting).
        model_mode: the batch-norm mode the attacker assumes (None: the clients' true mode).
        rho_guess: the attacker's guess of FedADMM's penalty ρ (None: it knows ρ).
        client_state_known: the attacker is told each FedADMM client's x and π at the start
            of the attacked round (a server that received the client's earlier increments
            one by one can compute them).
        lengths_known: text: the attacker is told each sequence's length in tokens.
        server_modifies_model: the server is malicious: it may alter the model it sends the
            clients (e.g. insert an imprint layer) before they train on it.
    """

    labels_known: bool = False
    local_guess: dict[str, float | int | None] = field(default_factory=dict)
    model_mode: str | None = None
    rho_guess: float | None = None
    client_state_known: bool = False
    lengths_known: bool = False
    server_modifies_model: bool = False

    def guessed(self) -> list[str]:
        """The local-training settings the attacker guesses, in GUESSABLE order."""
        return [k for k in GUESSABLE if self.local_guess.get(k) is not None]


def grant_knowledge(
    data: DataFacts,
    labels: torch.Tensor,
    protocol: ProtocolSettings,
    grants: Grants | None = None,
    client_states: Sequence[ClientState] | None = None,
    lengths: Sequence[int] | None = None,
) -> Knowledge:
    """What the threat model grants the attacker of one shared update: the only place that
    builds `Knowledge` from the truth.

    Args:
        data: the data's format.
        labels: the true labels of every sample behind the update (all users together);
            they reach the attacker only when `grants.labels_known`.
        protocol: what the clients really do (users, local training, batch-norm mode).
        grants: what else is granted or guessed (default: nothing granted, nothing guessed).
        client_states: the true state of each user's client at the start of the attacked
            round (FedADMM, known once the earlier rounds ran); it reaches the attacker only
            when `grants.client_state_known`.
        lengths: text: each sequence's true length in tokens; it reaches the attacker only
            when `grants.lengths_known`.

    Returns:
        The attacker's knowledge: batch size and users from the truth, labels if granted,
        the local training, FedADMM's ρ and batch-norm mode as known or as guessed, the
        attacked round, the clients' state if granted, and whether the server may alter
        the model it sends.

    Raises:
        GradleakError: an impossible guess, or data facts that do not fit (one line each).
    """
    grants = grants or Grants()
    batch_size = int(labels.shape[0])
    if protocol.users < 1 or batch_size % protocol.users:
        raise GradleakError(
            f"batch_size {batch_size} does not split evenly over {protocol.users} users"
        )
    local, guessed = protocol.attacker_belief(grants, batch_size // protocol.users)
    return Knowledge(
        data_shape=data.shape,
        num_classes=data.num_classes,
        batch_size=batch_size,
        mean=data.mean,
        std=data.std,
        model_mode=grants.model_mode or protocol.model_mode,
        labels=labels if grants.labels_known else None,
        dataset=data.name,
        num_users=protocol.users,
        local_training=local,
        local_training_guessed=guessed,
        model_mode_guessed=grants.model_mode is not None,
        modality=data.modality,
        attacked_round=protocol.rounds,
        admm=protocol.admm_belief(grants, client_states),
        sequence_lengths=tuple(int(n) for n in lengths)
        if grants.lengths_known and lengths is not None
        else None,
        server_modifies_model=grants.server_modifies_model,
    )
