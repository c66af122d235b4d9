"""Attack an update captured outside gradleak's own simulation (a file, a Flower round).

There is no simulated case here: the server's model, the data's format and the protocol
are what the attacker holds, and the update is what a real client sent. The private batch
behind it reaches this module only on the evaluation side (`truth`), when whoever captured
the update also has it (a simulation, a client checking its own update); without it the
reconstruction is written unscored.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from torch import nn

from gradleak import attacks
from gradleak.attacks.base import modifies_model
from gradleak.attacks.engine.hooks import Observer
from gradleak.attacks.reconstruction import Reconstruction
from gradleak.attacks.registry import check_readable
from gradleak.core.batch import PrivateBatch
from gradleak.core.errors import GradleakError
from gradleak.core.files import replaced_atomically, write_atomically
from gradleak.core.knowledge import DataFacts, Grants, grant_knowledge
from gradleak.core.settings import to_plain
from gradleak.core.update import SharedUpdate, UpdateKind
from gradleak.fl.protocols import ProtocolSettings
from gradleak.metrics import Evaluation
from gradleak.report import write_history_csv
from gradleak.report.images import save_image_strip
from gradleak.scenario.case import ServerView
from gradleak.scenario.observe import score

# What a captured run writes beside the usual files: the decoded reconstruction as tensors,
# so that code can read back exactly what the attack recovered.
RECONSTRUCTION_TENSORS = "reconstruction.pt"


@dataclass(frozen=True)
class CapturedOutcome:
    """One captured update attacked.

    Attributes:
        view: the server's view the attack was given (model and knowledge).
        update: the update as attacked (a weight difference already read as a gradient
            where the protocol shares gradients).
        attack: the attack as run.
        reconstruction: what it recovered.
        evaluation: its scores against the private batch, or None without one.
    """

    view: ServerView
    update: SharedUpdate
    attack: attacks.Attack
    reconstruction: Reconstruction
    evaluation: Evaluation | None


def captured_view(
    model: nn.Module,
    facts: DataFacts,
    protocol: ProtocolSettings,
    batch_size: int,
    *,
    grants: Grants | None = None,
    labels: torch.Tensor | None = None,
) -> ServerView:
    """The server's view of a captured update: its model and what the threat model grants.

    Args:
        model: the model the client received (the round's global model).
        facts: the data's format (shape, classes, normalisation).
        protocol: what the client did (FedSGD, or FedAvg's local training as the server
            configured it).
        batch_size: the samples behind the update (Flower clients report it as
            `num-examples`; a file's metadata as `num_samples`).
        grants: what else the threat model grants (default: nothing; labels unknown).
        labels: the true labels, needed only when `grants.labels_known`.

    Returns:
        The view an attack may be given.

    Raises:
        GradleakError: labels granted but not given, labels of the wrong length, or a
            batch size that cannot be.
    """
    grants = grants or Grants()
    if batch_size < 1:
        raise GradleakError(f"the update's batch size is {batch_size}; it must be at least 1")
    if grants.labels_known and labels is None:
        raise GradleakError(
            "the threat model grants the labels but none were given; pass the labels or "
            "drop the grant"
        )
    if labels is None:
        # Only the count reaches the attacker: labels are not granted, so none are passed on.
        labels = torch.zeros(batch_size, dtype=torch.long)
    if labels.shape != (batch_size,):
        raise GradleakError(
            f"{labels.shape[0] if labels.dim() else 0} labels given for an update of "
            f"{batch_size} samples; give one label per sample"
        )
    knowledge = grant_knowledge(facts, labels, protocol, grants)
    return ServerView(model, knowledge)


def read_as(update: SharedUpdate, protocol: ProtocolSettings, lr: float | None) -> SharedUpdate:
    """The update as the protocol's attacks read it.

    A client that takes one SGD step of size `lr` and shares its new weights (Flower's
    usual reply) shares Δ = −lr·g: FedSGD's attacks read the gradient g = −Δ/lr.

    Args:
        update: the captured update.
        protocol: the protocol it is attacked as.
        lr: the client's learning rate (needed to read a weight difference as a gradient).

    Returns:
        The update in the kind the protocol shares.

    Raises:
        GradleakError: a weight difference read as a gradient without `lr`, or a kind the
            protocol cannot produce.
    """
    shares = protocol.protocol.shares
    if update.kind is shares:
        return update
    if update.kind is UpdateKind.WEIGHT_DELTA and shares is UpdateKind.GRADIENT:
        if lr is None or not lr > 0:
            raise GradleakError(
                "a weight difference is read as a FedSGD gradient only with the client's "
                "learning rate; pass --local-lr (one SGD step: gradient = −Δ/lr)"
            )
        return update.scaled(-1.0 / lr, UpdateKind.GRADIENT)
    raise GradleakError(
        f"the update is {update.kind.noun} but --protocol {protocol.name} shares "
        f"{shares.description}; pick the protocol that produced it"
    )


def refuse_model_modifying(attack: attacks.Attack, name: str) -> None:
    """Refuse a malicious server's attack: a captured update answers the unaltered model.

    Args:
        attack: the attack to run on a captured update.
        name: its name, for the message.

    Raises:
        GradleakError: when `attack` alters the model before the clients get it.
    """
    if modifies_model(attack):
        raise GradleakError(
            f"attack '{name}' alters the model before the clients train on it, but a captured "
            "update answers the model they received; run it in a simulation (gradleak "
            "attack without --update, with --malicious-server)"
        )


def attack_captured(
    view: ServerView,
    update: SharedUpdate,
    attack: attacks.Attack,
    *,
    name: str,
    seed: int = 0,
    truth: PrivateBatch | None = None,
    progress: bool = False,
    attacked_hook: Callable[[], None] | None = None,
    observer: Observer | None = None,
) -> CapturedOutcome:
    """Attack one captured update and, with the private batch, score the result.

    Args:
        view: the server's view (`captured_view`).
        update: the update, in the kind the protocol shares (`read_as`).
        attack: the attack to run.
        name: the attack's name, for messages.
        seed: seeds the attack's start.
        truth: the private batch behind the update (evaluation side only; None: unscored).
        progress: show a progress bar.
        attacked_hook: called once the attack has returned, before scoring (a command
            holds interrupts from there on, so finished work is written whole).
        observer: the engine's callback hook (e.g. one that stops the attack).

    Returns:
        The view, the update, the attack, the reconstruction and its scores (if any).

    Raises:
        GradleakError: an update whose names, shapes or values do not fit the model, of a
            kind the attack cannot read, or an attack that alters the model (before the
            attack starts).
    """
    refuse_model_modifying(attack, name)
    update.validate_for(view.model)
    check_readable(name, attack.reads, update.kind)
    reconstruction = attack.reconstruct(
        update, view.model, view.knowledge, seed=seed, observer=observer, progress=progress
    )
    if attacked_hook is not None:
        attacked_hook()
    evaluation = None if truth is None else score(view, truth, reconstruction)
    return CapturedOutcome(view, update, attack, reconstruction, evaluation)


def captured_metrics(outcome: CapturedOutcome, settings: Mapping[str, object]) -> dict[str, object]:
    """metrics.json of a captured run: `settings` (what was attacked and how), the
    reconstruction's status and trace summary, and its scores when the truth was known."""
    rec, view = outcome.reconstruction, outcome.view
    scores = {} if outcome.evaluation is None else outcome.evaluation.to_dict()
    return {
        **to_plain(dict(settings)),
        "scored": outcome.evaluation is not None,
        "psnr": scores.get("psnr"),
        "ssim": scores.get("ssim"),
        "mse": scores.get("mse"),
        "label_accuracy": scores.get("label_accuracy"),
        "exact_fraction": scores.get("exact_fraction"),
        **({"per_image": scores["per_image"]} if "per_image" in scores else {}),
        "matching": scores.get("matching"),
        "iterations": rec.iterations,
        "loss_evaluations": rec.loss_evaluations,
        "seconds": rec.seconds,
        "restarts": outcome.attack.config.restarts,
        "best_trial": rec.best_trial,
        "matching_loss": rec.loss,
        "label_strategy": rec.label_strategy,
        "recovered_labels": [] if rec.labels is None else rec.labels.tolist(),
        "status": rec.status.value,
        "status_reason": rec.status_reason,
        "interrupted": rec.interrupted,
        "attack_details": to_plain(rec.details),
        "threat_model": view.knowledge.describe(),
        "convention": view.modality.convention,
    }


def write_captured(
    out_dir: Path,
    outcome: CapturedOutcome,
    settings: Mapping[str, object],
    truth: PrivateBatch | None = None,
) -> dict[str, object]:
    """Write a captured run's directory: reconstruction.png (grid.png with the truth),
    reconstruction.pt (the decoded images and labels), history.csv, config.yaml and
    metrics.json, written last so that its presence means the run is complete.

    Args:
        out_dir: the run directory (created if missing).
        outcome: the attacked update (`attack_captured`).
        settings: what was attacked and how (recorded in metrics.json and config.yaml).
        truth: the private batch the outcome was scored against, to draw beside it.

    Returns:
        The metrics written.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    view, rec = outcome.view, outcome.reconstruction
    recon = view.decode(rec.images).detach().cpu()
    if truth is not None and outcome.evaluation is not None:
        view.modality.render_run(
            out_dir, view.decode(truth.images).cpu(), recon, outcome.evaluation.matching
        )
    else:
        save_image_strip(torch.nan_to_num(recon, nan=0.0), out_dir / "reconstruction.png")
    labels = None if rec.labels is None else rec.labels.detach().cpu()
    with replaced_atomically(out_dir / RECONSTRUCTION_TENSORS) as partial:
        torch.save({"images": recon, "labels": labels}, partial)
    write_history_csv(rec.history, out_dir / "history.csv")
    resolved = {
        "captured": to_plain(dict(settings)),
        "attack": {**to_plain(outcome.attack.config), **to_plain(rec.details)},
        "threat_model": view.knowledge.describe(),
    }
    write_atomically(out_dir / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
    metrics = captured_metrics(outcome, settings)
    text = json.dumps(to_plain(metrics), indent=2, allow_nan=False)
    write_atomically(out_dir / "metrics.json", text + "\n")
    return metrics
