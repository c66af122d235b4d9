"""What a Flower server knows of its clients, and how it reads a client's reply as an update.

A Flower client replies to a training message with its model after local training (an
`ArrayRecord` of named arrays) and, by convention, its number of examples. The server sent
the round's global model itself, so the difference of the two is the client's update: a
weight difference, read as a gradient where the client took one SGD step (FedSGD).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from gradleak.core.errors import GradleakError
from gradleak.core.knowledge import DataFacts, Grants
from gradleak.core.update import SharedUpdate, UpdateKind, state_difference
from gradleak.fl.local_training import LocalTraining
from gradleak.fl.protocols import ProtocolSettings
from gradleak.scenario.captured import captured_view, read_as
from gradleak.scenario.case import ServerView

# The protocols a Flower client's reply can be read as (FedADMM's state does not travel in
# Flower's messages).
PROTOCOLS = ("fedsgd", "fedavg")


@dataclass(frozen=True)
class FlowerTarget:
    """How the server reads its clients' training replies, and what it knows of them.

    Everything here is what the server configured or the protocol discloses: the model it
    sends, the data's format, the clients' learning rate and local training (sent in the
    round's train config), and the message keys.

    Args:
        model: the clients' architecture: a module (each round's global arrays replace its
            weights in a copy) or a factory without arguments.
        facts: the data's format (`for_dataset` fills it from a dataset's name).
        protocol: `fedsgd`: each client takes one SGD step of size `lr` on one batch, so
            −Δ/lr is its gradient; `fedavg`: local SGD as `local_steps` or `local_epochs`,
            `local_batch_size` and `lr` say.
        lr: the clients' learning rate.
        local_steps: FedAvg's local SGD steps (None: one, or `local_epochs`).
        local_epochs: FedAvg's local epochs instead of steps.
        local_batch_size: FedAvg's mini-batch (None: all the client's samples at once).
        model_mode: the clients' batch-norm mode, train or eval.
        arrays_key: the key of the model's `ArrayRecord` in train messages and replies.
        metrics_key: the key of the reply's `MetricRecord`.
        num_examples_key: the metric holding the client's number of examples.

    Raises:
        GradleakError: an unknown protocol, a learning rate that is not positive, or a
            model that is neither a module nor a factory.
    """

    model: nn.Module | Callable[[], nn.Module]
    facts: DataFacts
    protocol: str = "fedsgd"
    lr: float = 0.01
    local_steps: int | None = None
    local_epochs: int | None = None
    local_batch_size: int | None = None
    model_mode: str = "train"
    arrays_key: str = "arrays"
    metrics_key: str = "metrics"
    num_examples_key: str = "num-examples"
    # The architecture, built once: copies of it serve every round and every thread.
    _template: nn.Module = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise GradleakError(
                f"a Flower client's reply is read as {' or '.join(PROTOCOLS)}, not "
                f"{self.protocol!r}"
            )
        if not isinstance(self.model, nn.Module) and not callable(self.model):
            raise GradleakError(
                f"model must be a torch module or a factory, not {type(self.model).__name__}"
            )
        # FedSGD reads −Δ/lr as the gradient, so lr is checked for both protocols.
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise GradleakError(f"lr must be the clients' learning rate (> 0), not {self.lr}")
        self.protocol_settings(None)  # the local training's settings are checked here
        # A factory draws its random init from the global torch RNG: built once here, with
        # that RNG restored, so capturing and checking updates never changes what the
        # server's or a client's own random draws give.
        with torch.random.fork_rng(devices=[]):
            template = self.model if isinstance(self.model, nn.Module) else self.model()
        if not isinstance(template, nn.Module):
            raise GradleakError(
                f"the model factory returned a {type(template).__name__}, not a torch module"
            )
        object.__setattr__(self, "_template", template)

    @classmethod
    def for_dataset(
        cls, dataset: str, *, model: nn.Module | Callable[[], nn.Module], **settings: object
    ) -> FlowerTarget:
        """A target whose data facts are a gradleak dataset's (shape, classes, statistics).

        Args:
            dataset: a dataset name (`gradleak list`), e.g. cifar10 or mnist.
            model: the clients' architecture.
            **settings: the other fields of `FlowerTarget`.

        Returns:
            The target.

        Raises:
            GradleakError: an unknown dataset, or a setting `FlowerTarget` refuses.
        """
        from gradleak.data import dataset_stats

        spec = dataset_stats(dataset)
        facts = DataFacts(
            (spec.channels, *spec.image_size), spec.num_classes, spec.mean, spec.std, spec.name
        )
        return cls(model=model, facts=facts, **settings)  # type: ignore[arg-type]

    def protocol_settings(self, num_samples: int | None) -> ProtocolSettings:
        """The client's protocol as gradleak's protocols describe it.

        Args:
            num_samples: the client's examples, which the local mini-batch must fit (None:
                not checked).

        Raises:
            GradleakError: local training settings that cannot be, or a mini-batch larger
                than `num_samples`.
        """
        if self.protocol == "fedsgd":
            return ProtocolSettings("fedsgd", model_mode=self.model_mode)
        local = LocalTraining(
            lr=self.lr,
            steps=self.local_steps,
            epochs=self.local_epochs,
            batch_size=self.local_batch_size,
        )
        if num_samples is not None:
            local.check(num_samples, "local_batch_size")
        return ProtocolSettings("fedavg", local=local, model_mode=self.model_mode)

    @property
    def parameter_names(self) -> list[str]:
        """The architecture's parameter names: what an update holds (the rest are buffers)."""
        return [name for name, _ in self._template.named_parameters()]

    def check_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Refuse a global model whose names or shapes do not fit the architecture.

        Raises:
            GradleakError: naming the first mismatch and the fix.
        """
        expected = self._template.state_dict()
        missing = sorted(set(expected) - set(state))
        extra = sorted(set(state) - set(expected))
        wrong = [n for n in expected if n in state and state[n].shape != expected[n].shape]
        if missing or extra or wrong:
            problem = (
                f"missing {missing[:3]}"
                if missing
                else f"unexpected {extra[:3]}"
                if extra
                else f"{wrong[0]!r} has shape {tuple(state[wrong[0]].shape)}, not "
                f"{tuple(expected[wrong[0]].shape)}"
            )
            raise GradleakError(
                f"the global model's arrays do not fit the target's model ({problem}); give "
                "FlowerTarget the architecture the clients train"
            )

    def build_model(self, state: Mapping[str, torch.Tensor]) -> nn.Module:
        """The architecture with `state` (a round's global model) loaded.

        Raises:
            GradleakError: names or shapes of `state` that do not fit the architecture.
        """
        self.check_state(state)
        model = copy.deepcopy(self._template)
        expected = model.state_dict()
        model.load_state_dict({n: t.to(expected[n].dtype) for n, t in state.items()})
        return model

    def view(
        self,
        global_state: Mapping[str, torch.Tensor],
        num_samples: int,
        *,
        grants: Grants | None = None,
        labels: torch.Tensor | None = None,
    ) -> ServerView:
        """The server's view of one client's update in a round: what an attack is given.

        Args:
            global_state: the round's global model as sent to the client.
            num_samples: the client's reported number of examples.
            grants: what else the threat model grants (default: nothing).
            labels: the true labels, only with `grants.labels_known`.
        """
        model = self.build_model(global_state)
        protocol = self.protocol_settings(num_samples)
        return captured_view(model, self.facts, protocol, num_samples, grants=grants, labels=labels)

    def read(self, update: SharedUpdate, num_samples: int) -> SharedUpdate:
        """The update in the kind the target's protocol shares (FedSGD: −Δ/lr)."""
        return read_as(update, self.protocol_settings(num_samples), self.lr)


def weight_update(
    global_state: Mapping[str, torch.Tensor],
    local_state: Mapping[str, torch.Tensor],
    parameters: list[str],
    metadata: Mapping[str, int | float | str | bool],
) -> SharedUpdate:
    """The client's weight difference θ_local − θ_global over the model's parameters.

    Args:
        global_state: the model the server sent.
        local_state: the model the client sent back.
        parameters: the model's parameter names (buffers such as batch norm's running
            statistics are no update: the local ones go along as the update's buffers).
        metadata: what the protocol discloses (num_samples, round, node).

    Returns:
        A `weight_delta` update.

    Raises:
        GradleakError: the two states do not hold the same names and shapes.
    """
    if set(global_state) != set(local_state):
        odd = sorted(set(global_state) ^ set(local_state))
        raise GradleakError(
            f"the client's reply holds other arrays than the global model ({odd[:3]}); the "
            "client must send back the model it received, trained"
        )
    for name in parameters:
        if global_state[name].shape != local_state[name].shape:
            raise GradleakError(
                f"the client's array {name!r} has shape {tuple(local_state[name].shape)}, "
                f"the global model's {tuple(global_state[name].shape)}"
            )
    delta, buffers = state_difference(global_state, local_state, parameters)
    return SharedUpdate(delta, UpdateKind.WEIGHT_DELTA, dict(metadata), buffers=buffers)
