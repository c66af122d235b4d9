"""Run one attack end to end: case → client update → attack → evaluation → outputs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from gradleak import attacks
from gradleak.attacks.reconstruction import Reconstruction
from gradleak.core.batch import PrivateBatch
from gradleak.core.errors import GradleakError
from gradleak.core.update import SharedUpdate
from gradleak.defenses import ClientView, apply_defenses, parse_defenses
from gradleak.fl.client import Client
from gradleak.fl.rounds import simulate
from gradleak.metrics import (
    Evaluation,
    evaluate_images,
)
from gradleak.scenario.case import Case, build_case
from gradleak.scenario.config import RunConfig
from gradleak.scenario.observe import psnr_observer
from gradleak.scenario.outputs import check_out_dir, run_metrics, write_outputs
from gradleak.scenario.snapshots import SnapshotRecorder, default_snapshot_iterations


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
    metrics = run_metrics(config, case, outcome.attack, rec, evaluation)
    try:
        write_outputs(out_dir, config, outcome.attack.config, case, rec, evaluation, metrics)
        if outcome.snapshots is not None:
            outcome.snapshots.save(out_dir)
    except OSError as exc:
        raise GradleakError(f"cannot write the run directory {out_dir}: {exc}") from exc
    return RunResult(**vars(outcome), metrics=metrics, out_dir=out_dir)
