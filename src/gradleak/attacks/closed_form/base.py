"""What closed-form attacks (analytic, R-GAP) share: no iterations, plain gradients only."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

import torch
from torch import nn

from gradleak.attacks.labels import AUTO, resolve_label_strategy
from gradleak.attacks.reconstruction import Reconstruction, Status
from gradleak.core.errors import GradleakError
from gradleak.core.knowledge import Knowledge
from gradleak.core.settings import replace_checked
from gradleak.core.update import SharedUpdate, UpdateKind


def check_no_iterations(iterations: int, restarts: int, who: str) -> None:
    """Closed forms solve once: refuse settings that ask them to iterate."""
    if iterations != 0 or restarts != 1:
        raise GradleakError(f"{who} does not iterate; leave iterations at 0 and restarts at 1")


def closed_form_result(
    images: torch.Tensor,
    update: SharedUpdate,
    model: nn.Module,
    knowledge: Knowledge,
    *,
    loss: float,
    start: float,
    details: dict[str, object],
    read_labels: bool = True,
    interrupted: bool = False,
) -> Reconstruction:
    """What a closed form returns: its images, the `auto` strategy's labels, no iterations.

    Args:
        images: the recovered inputs, B×C×H×W in the attacked (normalised) space.
        update: the shared update (the label strategy reads its last layer).
        model: the server's model.
        knowledge: the threat model (granted labels are used as they are).
        loss: the closed form's own residual, reported as the loss of its one trial.
        start: `time.perf_counter()` when the attack began; the seconds run to now.
        details: what the attack reports of itself (its diagnostics).
        read_labels: read labels at all (False: none, e.g. for a weight difference whose
            last layer no label strategy reads).
        interrupted: Ctrl-C or SIGTERM ended the attack early; the result is partial.

    Returns:
        The reconstruction: labels from the `auto` strategy (granted ones, else iDLG's for
        one sample, else none), 0 iterations, one trial.
    """
    labels, strategy_name, recovers = None, "none", True
    if read_labels:
        strategy = resolve_label_strategy(AUTO, knowledge)
        found = strategy.recover(update, model, knowledge)
        recovers = strategy.recovers
        if found is not None:
            labels, strategy_name = found.long(), strategy.name
    return Reconstruction(
        images=images,
        labels=labels,
        loss=loss,
        iterations=0,
        seconds=time.perf_counter() - start,
        trial_losses=[loss],
        label_strategy=strategy_name,
        labels_recovered=recovers,
        details=details,
        interrupted=interrupted,
        status=Status.INTERRUPTED if interrupted else Status.OK,
        status_reason="stopped by an interrupt; what was found so far is kept"
        if interrupted
        else "",
    )


_Attack = TypeVar("_Attack", bound="ClosedFormAttack")


class ClosedFormAttack:
    """Name, validated config, `reads` and `with_options` for a closed-form attack.

    A subclass names its default name (`default_name`), its config dataclass
    (`config_type`, with a `validate()` that returns the config) and its `reconstruct`.
    Closed forms solve once: their configs keep `iterations` at 0 and `restarts` at 1.

    Args:
        name: the attack's name (None: `default_name`).
        config: its settings, a `config_type` (None: the defaults).

    Raises:
        GradleakError: when `config` is invalid (the config's `validate`).
    """

    default_name: ClassVar[str]
    config_type: ClassVar[type]

    def __init__(self, name: str | None = None, config: Any = None) -> None:
        self.name = name or self.default_name
        self.config = (config or self.config_type()).validate()

    @property
    def reads(self) -> frozenset[UpdateKind]:
        """Only plain gradients: a weight difference mixes several steps' inputs.

        Returns:
            {GRADIENT}.
        """
        return frozenset({UpdateKind.GRADIENT})

    def with_options(self: _Attack, options: Mapping[str, Any]) -> _Attack:
        """A copy with options overridden (unknown keys are errors).

        Args:
            options: fields of the config mapped to new values; a float field also takes
                an integer or a numeric string.

        Returns:
            A new attack of the same class and name; this one is left unchanged.

        Raises:
            GradleakError: when a key is not a field of the config.
            GradleakError: when a value does not have, or convert to, the field's type.
            GradleakError: when the new config is invalid (e.g. iterations not 0).
        """
        config = replace_checked(self.config, options, f"attack '{self.name}' options")
        return type(self)(self.name, config)
