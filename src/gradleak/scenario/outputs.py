"""What a run writes: metrics.json, pictures, the history and the resolved configuration."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import yaml

from gradleak.attacks.priors.nearest import NearestTraining, nearest_training
from gradleak.core.device import device_name
from gradleak.core.files import write_atomically
from gradleak.core.settings import to_plain
from gradleak.report import write_history_csv
from gradleak.report.images import PRIOR_GRID, save_prior_grid
from gradleak.scenario.plan import RunPlan

if TYPE_CHECKING:
    from gradleak.scenario.run import AttackOutcome


def run_metrics(
    plan: RunPlan, outcome: AttackOutcome, nearest: NearestTraining | None = None
) -> dict[str, object]:
    """Everything metrics.json records about one run: settings, scores, the threat model,
    and with `nearest` (`prior_nearest`) how close the reconstruction is to the prior's
    training images."""
    config, rec = plan.config, outcome.reconstruction
    server, client = outcome.attacked, outcome.case.client
    ev = outcome.evaluation.to_dict()
    return {
        "attack": config.attack,
        "model": config.model,
        # A factory's keyword arguments (absent for built-in models).
        **({"model_args": to_plain(config.model_args)} if config.model_args else {}),
        "modality": config.modality,
        "dataset": config.dataset if config.modality == "image" else "text",
        "source": client.source,
        "batch_size": config.batch_size,
        "protocol": config.protocol,
        "users": config.users,
        "protocol_settings": plan.protocol.describe(),
        "defenses": list(config.defenses),
        "seed": plan.seed,
        # The modality's scores (images: psnr, ssim, mse, label_accuracy, per_image; text:
        # token and sequence scores, ROUGE, per_sequence), the matching listed further on.
        **{key: value for key, value in ev.items() if key != "matching"},
        "iterations": rec.iterations,
        "loss_evaluations": rec.loss_evaluations,
        "seconds": rec.seconds,
        # Where the seconds were spent: the device and, for a GPU, its name.
        "device": str(plan.device),
        "device_name": device_name(plan.device),
        "stopped_at_psnr": plan.output.stop_psnr if rec.stopped else None,
        "compiled": rec.compiled,
        "compile_seconds": rec.compile_seconds,
        # on | off | auto, and what auto decided and why (one line)
        "compile_mode": rec.compile_report.get("mode"),
        "compile_decision": rec.compile_report.get("decision"),
        # inductor's FX-graph cache: graphs served from the cache folder, and compiled anew
        "compile_cache_hits": rec.compile_report.get("cache_hits"),
        "compile_cache_misses": rec.compile_report.get("cache_misses"),
        "restarts": outcome.attack.config.restarts,  # as run (a --budget plans them)
        "trials_run": len(rec.trial_losses),
        "best_trial": rec.best_trial,
        "matching_loss": rec.loss,
        "trial_losses": rec.trial_losses,
        "label_strategy": rec.label_strategy,
        "recovered_labels": [] if rec.labels is None else rec.labels.tolist(),
        "true_labels": client.batch.labels.tolist(),
        "matching": ev["matching"],
        "interrupted": rec.interrupted,
        # ok | diverged | no-progress | interrupted: anything but ok is no attack result.
        "status": rec.status.value,
        "status_reason": rec.status_reason,
        "trial_status": [status.value for status in rec.trial_status],
        # What the attack reports of itself (closed forms: rank, bins, certificates).
        "attack_details": to_plain(rec.details),
        "threat_model": server.knowledge.describe(),
        "convention": server.modality.convention,
        **({} if nearest is None else {"prior_nearest": nearest.summary()}),
    }


def write_outputs(
    out_dir: Path,
    plan: RunPlan,
    outcome: AttackOutcome,
    metrics: Mapping[str, object],
    nearest: NearestTraining | None = None,
) -> None:
    """The run directory: the modality's pictures (with `nearest`, prior_nearest.png too),
    snapshots, history.csv, the resolved config.yaml and metrics.json (written last, so its
    presence means the run is complete).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    server, client = outcome.attacked, outcome.case.client
    rec = outcome.reconstruction
    modality = server.modality
    recon = server.decode(rec.images)
    modality.render_run(
        out_dir, server.decode(client.batch.images), recon, outcome.evaluation.matching
    )
    if nearest is not None:
        matching = outcome.evaluation.matching
        matched = recon[torch.as_tensor(matching, dtype=torch.long, device=recon.device)]
        truth = server.decode(client.batch.images)
        save_prior_grid(truth, matched, nearest.images, out_dir / PRIOR_GRID)
    write_history_csv(rec.history, out_dir / "history.csv")
    resolved = {
        "run": to_plain(plan.config),
        "attack": {"name": plan.config.attack, **to_plain(outcome.attack.config), **rec.details},
        "threat_model": server.knowledge.describe(),
        # Where it ran: `run` keeps the device as asked for (e.g. auto), to run it again.
        "device": str(plan.device),
    }
    write_atomically(out_dir / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
    if outcome.snapshots is not None:
        outcome.snapshots.save(out_dir, modality)
    text = json.dumps(to_plain(metrics), indent=2, allow_nan=False)
    write_atomically(out_dir / "metrics.json", text + "\n")


def prior_nearest(outcome: AttackOutcome) -> NearestTraining | None:
    """The trained prior's nearest training images, for image runs that used one (it reads
    the prior's file: compute it once per run and pass it to `run_metrics` and
    `write_outputs`)."""
    rec, server = outcome.reconstruction, outcome.attacked
    if server.knowledge.modality != "image" or rec.images is None:
        return None
    return nearest_training(
        rec.details,
        server.decode(outcome.case.client.batch.images),
        server.decode(rec.images),
        outcome.evaluation.matching,
    )
