"""Run one attack end to end: case → client update → attack → evaluation → outputs."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from gradleak import attacks
from gradleak.attacks.optimize import Observer, StopAttack, best_trial
from gradleak.attacks.reconstruction import Reconstruction
from gradleak.config import to_plain
from gradleak.defenses import ClientView, apply_defenses, parse_defenses
from gradleak.errors import GradleakError
from gradleak.experiments.case import Case, build_case
from gradleak.experiments.config import RunConfig
from gradleak.experiments.snapshots import SnapshotRecorder, default_snapshot_iterations
from gradleak.fl.client import Client, PrivateBatch
from gradleak.fl.protocols import simulate
from gradleak.fl.update import SharedUpdate
from gradleak.metrics import (
    CONVENTION,
    Evaluation,
    evaluate_images,
    match_reconstructions,
    mse,
    psnr,
)
from gradleak.report import save_comparison_grid, save_image_strip, write_history_csv


def psnr_observer(
    case: Case, stop_at: float | None = None, recorder: SnapshotRecorder | None = None
) -> Observer:
    """Evaluation-side callback: PSNR and MSE of the currently best trial against the truth.

    With `stop_at`, the first time the PSNR reaches it the attack is stopped (once); with a
    `recorder`, pictures of the reconstruction are kept at the recorder's iterations.
    """
    truth01 = case.to_pixels(case.batch.images)
    stopped = False

    def observe(iteration: int, losses: torch.Tensor, images: torch.Tensor) -> Mapping[str, float]:
        nonlocal stopped
        recon01 = case.to_pixels(images[best_trial(losses)])
        order = match_reconstructions(recon01, truth01)
        if recorder is not None and recorder.wants(iteration):
            recorder.observe(iteration, recon01[order])
        value = float(psnr(recon01[order], truth01).mean())
        error = float(mse(recon01[order], truth01).mean())
        if stop_at is not None and value >= stop_at and not stopped:
            stopped = True
            raise StopAttack(f"PSNR {value:.2f} dB reached {stop_at} dB")
        return {"psnr": value, "mse": error}

    return observe


@dataclass
class AttackOutcome:
    """One attacked case: what was shared, what the attack made of it, and its scores."""

    case: Case
    attack: attacks.Attack
    update: SharedUpdate
    reconstruction: Reconstruction
    evaluation: Evaluation
    snapshots: SnapshotRecorder | None = None


@dataclass(kw_only=True)
class RunResult(AttackOutcome):
    """An attacked case plus the metrics written and where they went."""

    metrics: dict[str, object]
    out_dir: Path


def attack_case(config: RunConfig) -> AttackOutcome:
    """Simulate the client, attack its update and score the reconstruction (writes nothing)."""
    case = build_case(config)
    attack = attacks.get(config.attack).with_options(config.attack_options)
    iterations = config.snapshots or default_snapshot_iterations(attack.config.iterations)
    recorder = SnapshotRecorder(iterations)
    defenses = parse_defenses(config.defenses)
    generator = torch.Generator().manual_seed(config.seed)

    def defend(update: SharedUpdate, client: Client, batch: PrivateBatch) -> SharedUpdate:
        # Each client defends its own update before sharing it.
        return apply_defenses(update, defenses, generator, ClientView(client.model, batch))

    shared = simulate(case.model, case.batch, config.protocol_settings(), defend)
    update = shared.update
    reconstruction = attack.reconstruct(
        update,
        shared.server_model,
        case.knowledge,
        seed=config.seed,
        observer=psnr_observer(case, config.stop_psnr, recorder=recorder),
        progress=config.progress,
    )
    # Labels handed over by the threat model are not scored as a recovery.
    evaluation = evaluate_images(
        case.to_pixels(reconstruction.images),
        case.to_pixels(case.batch.images),
        reconstruction.labels if reconstruction.labels_recovered else None,
        case.batch.labels,
    )
    final01 = case.to_pixels(reconstruction.images)[evaluation.matching]
    recorder.observe_final(reconstruction.iterations, final01)
    return AttackOutcome(case, attack, update, reconstruction, evaluation, recorder)


def run_attack(config: RunConfig) -> RunResult:
    """attack_case, then save everything under the run directory."""
    out_dir = check_out_dir(Path(config.out or config.default_out()))
    outcome = attack_case(config)
    case, rec, evaluation = outcome.case, outcome.reconstruction, outcome.evaluation
    metrics = _metrics(config, case, outcome.attack, rec, evaluation)
    try:
        write_outputs(out_dir, config, outcome.attack.config, case, rec, evaluation, metrics)
        if outcome.snapshots is not None:
            outcome.snapshots.save(out_dir)
    except OSError as exc:
        raise GradleakError(f"cannot write the run directory {out_dir}: {exc}") from exc
    return RunResult(**vars(outcome), metrics=metrics, out_dir=out_dir)


def check_out_dir(out_dir: Path) -> Path:
    """Refuse an unusable run directory before the attack, so a bad --out costs no work."""
    existing = out_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing == out_dir and not out_dir.is_dir():
        raise GradleakError(f"--out {out_dir} is a file, not a directory; choose another --out")
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise GradleakError(f"cannot create the run directory {out_dir} under {existing}")
    return out_dir


def json_safe(value: object) -> object:
    """Non-finite floats become null: JSON has no NaN or Infinity."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def _metrics(
    config: RunConfig,
    case: Case,
    attack: attacks.Attack,
    rec: Reconstruction,
    evaluation: Evaluation,
) -> dict[str, object]:
    ev = evaluation.to_dict()
    return {
        "attack": config.attack,
        "model": config.model,
        "dataset": config.dataset,
        "source": case.source,
        "batch_size": config.batch_size,
        "protocol": config.protocol,
        "users": config.users,
        "protocol_settings": config.protocol_settings().describe(),
        "defenses": list(config.defenses),
        "seed": config.seed,
        "psnr": ev["psnr"],
        "ssim": ev["ssim"],
        "mse": ev["mse"],
        "label_accuracy": ev["label_accuracy"],
        "iterations": rec.iterations,
        "loss_evaluations": rec.loss_evaluations,
        "seconds": rec.seconds,
        "stopped_at_psnr": config.stop_psnr if rec.stopped else None,
        "compiled": rec.compiled,
        "compile_seconds": rec.compile_seconds,
        "restarts": attack.config.restarts,
        "trials_run": len(rec.trial_losses),
        "best_trial": rec.best_trial,
        "matching_loss": rec.loss,
        "trial_losses": rec.trial_losses,
        "label_strategy": rec.label_strategy,
        "recovered_labels": [] if rec.labels is None else rec.labels.tolist(),
        "true_labels": case.batch.labels.tolist(),
        "matching": ev["matching"],
        "per_image": ev["per_image"],
        "interrupted": rec.interrupted,
        "threat_model": case.knowledge.describe(),
        "convention": CONVENTION,
    }


def write_outputs(
    out_dir: Path,
    config: RunConfig,
    attack_config: object,
    case: Case,
    rec: Reconstruction,
    evaluation: Evaluation,
    metrics: Mapping[str, object],
) -> None:
    """metrics.json, reconstruction.png, grid.png, history.csv and the resolved config.yaml."""
    out_dir.mkdir(parents=True, exist_ok=True)
    recon01 = case.to_pixels(rec.images)
    truth01 = case.to_pixels(case.batch.images)
    order = evaluation.matching
    save_image_strip(recon01[order], out_dir / "reconstruction.png")
    save_comparison_grid(truth01, recon01, out_dir / "grid.png", matching=order)
    write_history_csv(rec.history, out_dir / "history.csv")
    resolved = {
        "run": to_plain(config),
        "attack": {"name": config.attack, **to_plain(attack_config), **rec.details},
        "threat_model": case.knowledge.describe(),
    }
    (out_dir / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
    text = json.dumps(json_safe(metrics), indent=2, allow_nan=False)
    (out_dir / "metrics.json").write_text(text + "\n")
