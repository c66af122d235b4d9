"""What every attack offers: a name, its settings, and reconstruct(update, model, knowledge)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from torch import nn

from gradleak.attacks.engine.budget import BudgetEstimate
from gradleak.attacks.engine.hooks import Observer
from gradleak.attacks.engine.step import Notice
from gradleak.attacks.reconstruction import Reconstruction
from gradleak.core.knowledge import Knowledge
from gradleak.core.update import SharedUpdate, UpdateKind


class Attack(Protocol):
    """An attack sees only the shared update, the server's model and the granted knowledge.

    Attacks are obtained by name from `gradleak.attacks.registry.get`, configured with
    `with_options` and run with `reconstruct`. They never see the clients' private data:
    the evaluation side scores what they return against the truth, and may watch a run
    through the `observer` hook.

    Attributes:
        name: the attack's name in the registry (e.g. "dlg", "ig", "rgap"); errors and
            reports use it.
        config: the attack's settings, a frozen dataclass. `iterations` (optimisation
            steps per trial, 0 for closed forms) and `restarts` (trials, 1 for closed
            forms) are always there.
    """

    name: str
    config: Any  # a frozen dataclass; `iterations` and `restarts` are always there

    @property
    def reads(self) -> frozenset[UpdateKind]:
        """The kinds of update this attack can attack.

        Returns:
            The update kinds `reconstruct` accepts (gradients, weight differences, FedADMM
            increments); `reconstruct` refuses any other kind.
        """
        ...

    def with_options(self, options: Mapping[str, Any]) -> Attack:
        """A copy of the attack with some of its settings overridden.

        Args:
            options: setting names of `config` mapped to new values; a float setting also
                takes an integer or a numeric string (e.g. "1e-3").

        Returns:
            A new attack of the same name and kind; this one is left unchanged.

        Raises:
            GradleakError: when a key is not a setting of `config`.
            GradleakError: when a value does not have, or convert to, the setting's type.
            GradleakError: when the new settings are invalid (the config's own checks).
        """
        ...

    def reconstruct(
        self,
        update: SharedUpdate,
        model: nn.Module,
        knowledge: Knowledge,
        *,
        seed: int = 0,
        observer: Observer | None = None,
        progress: bool = True,
    ) -> Reconstruction:
        """Reconstruct the private inputs (and labels) behind one shared update.

        Args:
            update: the update the clients shared (the mean over `knowledge.num_users`
                users); its tensors must match `model`'s named parameters.
            model: the server's model the update was computed at; the attack works on its
                own copy, so the model is left unchanged.
            knowledge: what the threat model grants the attacker (data format, batch size,
                users, labels if granted, local training, batch-norm mode).
            seed: seeds every random draw of the attack (dummy inputs, soft labels);
                the same seed gives the same result.
            observer: the engine's callback hook (see `gradleak.attacks.engine.hooks`),
                e.g. the evaluation side's `gradleak.scenario.observe.psnr_observer`;
                None: nothing watches. Closed-form attacks never call it.
            progress: show a progress bar on a terminal while the attack runs.

        Returns:
            The reconstruction: inputs B×C×H×W in the attacked (normalised) space, the
            labels it recovered or was given (None when it has none), the matching loss
            and how the attack got there.

        Raises:
            GradleakError: when the update does not fit `model` or is a kind the attack
                does not read, or the threat model does not grant what the attack needs
                (one line naming the fix).
        """
        ...


@runtime_checkable
class ModelChecked(Protocol):
    """An attack that serves only some models, and says which before any work.

    The closed-form attacks are: `reconstruct` makes the same check; studies call
    `check_model` on the model built for each cell before any cell runs.
    """

    def check_model(self, model: nn.Module, data_shape: tuple[int, ...], batch_size: int) -> None:
        """Refuse `model` (with inputs of `data_shape`, batches of `batch_size`) in one line.

        Raises:
            GradleakError: naming what the attack cannot read and what to use instead.
        """
        ...


@runtime_checkable
class Budgeted(Protocol):
    """An attack that estimates its time before any work and refuses runs beyond its bound.

    The optimisation attacks are (`GradientMatchingAttack.check_budget`): their
    `reconstruct` makes the same check first; studies call `check_budget` to check their
    cells before any cell runs.
    """

    def check_budget(
        self, update: SharedUpdate, model: nn.Module, knowledge: Knowledge, *, notice: Notice
    ) -> BudgetEstimate | None:
        """The estimate of `reconstruct(update, model, knowledge)`'s time, checked.

        Args:
            update: the shared update (only its kind and shapes matter).
            model: the server's model (left unchanged).
            knowledge: the threat model.
            notice: where a long estimate is told in one line.

        Returns:
            The estimate, or None where the attack's time is not estimated.

        Raises:
            GradleakError: when the estimate exceeds the attack's bound (one line naming
                what fits and how to raise the bound).
        """
        ...


@runtime_checkable
class ModelModifying(Protocol):
    """An attack mounted by a malicious server: it alters the model before the clients get it.

    The run hands the server's model to `modify_model` before any client trains, the clients
    compute their update on the returned model, and `reconstruct` then reads that update
    with the returned model. Only a threat model that grants
    `Requirement.MODIFY_MODEL` (`--malicious-server`) runs such an attack; one without a
    server that sends the model (decentralised peers, a captured update) refuses it.
    """

    def modify_model(self, model: nn.Module, knowledge: Knowledge, *, seed: int = 0) -> nn.Module:
        """The model the malicious server sends instead of `model`.

        Args:
            model: the server's honest model (left unchanged).
            knowledge: what the threat model grants (data shape, normalisation, batch size).
            seed: seeds any random draw of the modification.

        Returns:
            A new model whose parameters the clients train and share.

        Raises:
            GradleakError: when the threat model does not let the server alter the model,
                or the model cannot carry the modification (one line naming the fix).
        """
        ...


def modifies_model(attack: object) -> bool:
    """Whether `attack` is mounted by a server that alters the model it sends."""
    return isinstance(attack, ModelModifying)
