"""Run one attack end to end: case → client update → attack → evaluation → outputs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from gradleak import attacks
from gradleak.attacks.reconstruction import Reconstruction
from gradleak.core.batch import PrivateBatch
from gradleak.core.errors import GradleakError
from gradleak.core.files import check_out_dir
from gradleak.core.update import SharedUpdate
from gradleak.defenses import ClientView, apply_defenses
from gradleak.fl.client import Client
from gradleak.fl.rounds import simulate
from gradleak.metrics import Evaluation
from gradleak.scenario.case import Case, ServerView, case_from
from gradleak.scenario.config import RunConfig
from gradleak.scenario.observe import psnr_observer, score
from gradleak.scenario.outputs import run_metrics, write_outputs
from gradleak.scenario.plan import RunPlan, plan_run
from gradleak.scenario.snapshots import SnapshotRecorder


@dataclass
class AttackOutcome:
    """One attacked case: what was shared, what the attack made of it, and its scores.

    `case` is the case as built (the server's initial model); `attacked` is the server's
    view the attack was given (the model of the attacked round).
    """

    case: Case
    attacked: ServerView
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
    """Simulate the clients, attack their update and score the reconstruction; write nothing.

    Args:
        config: the run's settings.

    Returns:
        The case, the attack, the shared update, the reconstruction, its scores and the
        snapshots the evaluation side kept.

    Raises:
        GradleakError: settings that cannot run, missing data, an update the attack cannot
            read (one line each, before the attack starts).
    """
    return execute(plan_run(config))


def execute(plan: RunPlan) -> AttackOutcome:
    """Run a resolved plan: build the case, simulate, attack, score (writes nothing).

    Args:
        plan: the resolved run (`plan_run`).

    Returns:
        The case, the server's view the attack was given, the attack, the shared update, the
        reconstruction, its scores and the snapshots.

    Raises:
        GradleakError: missing or unreadable data, a checkpoint of another model.
    """
    case = case_from(plan.data, plan.model, plan.protocol, plan.grants)
    server, client = case
    recorder = SnapshotRecorder(plan.output.snapshots)
    generator = torch.Generator().manual_seed(plan.seed)

    def defend(update: SharedUpdate, member: Client, batch: PrivateBatch) -> SharedUpdate:
        # Each client defends its own update before sharing it.
        return apply_defenses(update, plan.defenses, generator, ClientView(member.model, batch))

    shared = simulate(server.model, client.batch, plan.protocol, defend)
    # The attacker holds the server's model of the attacked round and what is granted.
    attacked = ServerView(shared.server_model, server.knowledge)
    reconstruction = plan.attack.reconstruct(
        shared.update,
        attacked.model,
        attacked.knowledge,
        seed=plan.seed,
        observer=psnr_observer(case, plan.output.stop_psnr, recorder=recorder),
        progress=plan.output.progress,
    )
    evaluation = score(attacked, client.batch, reconstruction)
    final = attacked.decode(reconstruction.images)[evaluation.matching]
    recorder.observe_final(reconstruction.iterations, final)
    return AttackOutcome(
        case, attacked, plan.attack, shared.update, reconstruction, evaluation, recorder
    )


def run_attack(config: RunConfig) -> RunResult:
    """Run one attack end to end and write its run directory.

    Args:
        config: the run's settings (`config.out` is the run directory; None: runs/NAME).

    Returns:
        The outcome, the metrics written to metrics.json and the run directory. After
        Ctrl-C during the attack, what was reconstructed so far is scored and written, and
        `reconstruction.interrupted` is set.

    Raises:
        GradleakError: settings that cannot run or an unusable run directory, before any
            work; a run directory that cannot be written.
    """
    # The run directory first: a bad --out costs no work and is reported before anything else.
    check_out_dir(Path(config.out or config.default_out()))
    plan = plan_run(config)
    out_dir = plan.output.out_dir
    outcome = execute(plan)
    metrics = run_metrics(plan, outcome)
    try:
        write_outputs(out_dir, plan, outcome, metrics)
    except OSError as exc:
        raise GradleakError(f"cannot write the run directory {out_dir}: {exc}") from exc
    return RunResult(**vars(outcome), metrics=metrics, out_dir=out_dir)
