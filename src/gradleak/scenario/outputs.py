"""What a run writes: metrics.json, pictures, the history and the resolved configuration."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import yaml

from gradleak import attacks
from gradleak.attacks.reconstruction import Reconstruction
from gradleak.core.errors import GradleakError
from gradleak.core.settings import to_plain
from gradleak.metrics import (
    CONVENTION,
    Evaluation,
)
from gradleak.report import save_comparison_grid, save_image_strip, write_history_csv
from gradleak.scenario.case import Case
from gradleak.scenario.config import RunConfig


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


def run_metrics(
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
    text = json.dumps(to_plain(metrics), indent=2, allow_nan=False)
    (out_dir / "metrics.json").write_text(text + "\n")
