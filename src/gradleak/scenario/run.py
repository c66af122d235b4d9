"""Run one attack end to end: case → client update → attack → evaluation → outputs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from gradleak import attacks
from gradleak.attacks.base import modifies_model
from gradleak.attacks.reconstruction import Reconstruction
from gradleak.core.batch import PrivateBatch
from gradleak.core.errors import GradleakError
from gradleak.core.files import check_out_dir, output_dir
from gradleak.core.knowledge import grant_knowledge
from gradleak.core.signals import hold_interrupts, release_interrupts
from gradleak.core.update import SharedUpdate
from gradleak.defenses import ClientView, apply_defenses
from gradleak.fl.client import Client
from gradleak.fl.rounds import simulate
from gradleak.metrics import Evaluation
from gradleak.scenario.case import Case, ServerView, case_from
from gradleak.scenario.config import RunConfig
from gradleak.scenario.observe import psnr_observer, score
from gradleak.scenario.outputs import prior_nearest, run_metrics, write_outputs
from gradleak.scenario.plan import RunPlan, plan_run
from gradleak.scenario.snapshots import SnapshotRecorder
from gradleak.scenario.time_budget import fit_to_budget, with_deadline


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
    # Ctrl-C or SIGTERM arrived after the attack ended, while its results were scored and
    # written: they are complete, and the command still ends as interrupted.
    interrupted_while_writing: bool = False


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


def execute(plan: RunPlan, *, attacked_hook: Callable[[], None] | None = None) -> AttackOutcome:
    """Run a resolved plan: build the case, simulate, attack, score (writes nothing).

    Args:
        plan: the resolved run (`plan_run`).
        attacked_hook: called once the attack has returned, before scoring (`run_attack`
            holds interrupts from there on, so finished work is written whole).

    Returns:
        The case, the server's view the attack was given, the attack, the shared update, the
        reconstruction, its scores and the snapshots.

    Raises:
        GradleakError: missing or unreadable data, a checkpoint of another model.
    """
    case, update, attacked = attacked_view(plan)
    recorder = SnapshotRecorder(plan.output.snapshots)
    attack, observer = plan.attack, psnr_observer(case, plan.output.stop_psnr, recorder=recorder)
    if plan.config.budget is not None:  # timed on this update, then fitted to the budget
        fit = fit_to_budget(attack, update, attacked, plan.config.budget, seed=plan.seed)
        attack, observer = fit.attack, with_deadline(observer, fit.until)
    reconstruction = attack.reconstruct(
        update,
        attacked.model,
        attacked.knowledge,
        seed=plan.seed,
        observer=observer,
        progress=plan.output.progress,
    )
    if attacked_hook is not None:
        attacked_hook()
    evaluation = score(attacked, case.client.batch, reconstruction)
    final = attacked.decode(reconstruction.images)[evaluation.matching]
    recorder.observe_final(reconstruction.iterations, final)
    return AttackOutcome(case, attacked, attack, update, reconstruction, evaluation, recorder)


def attacked_view(plan: RunPlan) -> tuple[Case, SharedUpdate, ServerView]:
    """Build the case and simulate the clients: what the attack of `plan` is given.

    Args:
        plan: the resolved run (`plan_run`).

    Returns:
        The case as built, the shared (defended, aggregated) update, and the server's view
        the attack receives: the model of the attacked round (behind a malicious server's
        alterations, which the clients trained on) and the granted knowledge.

    Raises:
        GradleakError: missing or unreadable data, a checkpoint of another model.
    """
    case = case_from(plan.data, plan.model, plan.protocol, plan.grants).to(plan.device)
    server, client = case
    if modifies_model(plan.attack):
        # A malicious server sends its altered model: the clients train on it, and the
        # attack reads their update with it.
        sent = plan.attack.modify_model(server.model, server.knowledge, seed=plan.seed)
        server = ServerView(sent, server.knowledge)
    generator = torch.Generator().manual_seed(plan.seed)

    def defend(update: SharedUpdate, member: Client, batch: PrivateBatch) -> SharedUpdate:
        # Each client defends its own update before sharing it; DP-SGD re-runs its local
        # training from the round's server model.
        view = ClientView(member.model, batch, local=plan.protocol.local, start=member.server_model)
        return apply_defenses(update, plan.defenses, generator, view)

    shared = simulate(server.model, client.batch, plan.protocol, defend)
    # The attacker holds the server's model of the attacked round and what is granted; the
    # clients' own state at the start of that round (FedADMM's x and π) exists only now.
    knowledge = server.knowledge
    states = plan.protocol.client_states(shared.clients)
    if states is not None:
        facts, labels = knowledge.data_facts(), client.batch.labels
        knowledge = grant_knowledge(facts, labels, plan.protocol, plan.grants, states)
    return case, shared.update, ServerView(shared.server_model, knowledge)


def run_attack(config: RunConfig, *, overwrite: bool = False) -> RunResult:
    """Run one attack end to end and write its run directory.

    Args:
        config: the run's settings (`config.out` is the run directory; None: runs/NAME).
        overwrite: replace an earlier run in the run directory; without it a directory
            that holds files is refused before any work. The new run replaces the earlier
            one whole once it is written (also after Ctrl-C or SIGTERM, as the interrupted
            run it is); if writing fails, the earlier run stays.

    Returns:
        The outcome, the metrics written to metrics.json and the run directory. After
        Ctrl-C (or SIGTERM) during the attack, what was reconstructed so far is scored and
        written, and `reconstruction.interrupted` is set.

    Raises:
        GradleakError: settings that cannot run or an unusable run directory (a file, not
            writable, or holding an earlier run without `overwrite`), before any work; a
            run directory that cannot be written.
    """
    # The run directory first: a bad --out costs no work and is reported before anything else.
    check_out_dir(Path(config.out or config.default_out()), overwrite=overwrite)
    plan = plan_run(config)
    out_dir = plan.output.out_dir
    try:
        # Once the attack has returned, an interrupt waits until its results are written.
        outcome = execute(plan, attacked_hook=hold_interrupts)
        nearest = prior_nearest(outcome)
        metrics = run_metrics(plan, outcome, nearest)
        # Written whole or not at all: a run that fails while writing leaves no half run.
        with output_dir(out_dir, overwrite=overwrite) as folder:
            write_outputs(folder, plan, outcome, metrics, nearest)
    except OSError as exc:
        raise GradleakError(f"cannot write the run directory {out_dir}: {exc}") from exc
    finally:
        held = release_interrupts()
    return RunResult(
        **vars(outcome), metrics=metrics, out_dir=out_dir, interrupted_while_writing=bool(held)
    )
