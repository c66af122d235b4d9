"""Several runs that share one attack, attacked as one stacked computation.

A study often runs the same attack, on the same model under the same threat model, against
many images, one run each. Each run's clients and update are simulated as `run_attack`
would; the updates are then attacked together by the attack's `reconstruct_many` (Adam
stacks every update's trials into one batched computation, each trial matching its own
update), and each run is scored against its own truth and written as `run_attack` writes
it: the same metrics, pictures, history and snapshots, up to float rounding. Each run's
evaluation-side observer (PSNR against its own truth, snapshots) sees only its own trials.

What differs: a run's `seconds` is the stacked attack's time split equally over the runs
attacked together, and metrics.json says how many that were (`stacked`) and the stack's
whole time (`stacked_seconds`).

Runs whose attacked model or threat model (labels aside) differ cannot share one stacked
computation; they are attacked in as many stacks as they need. `stackable` says which
configurations may be given here at all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from gradleak.attacks.gradient_matching import GradientMatchingAttack
from gradleak.core.errors import GradleakError
from gradleak.core.files import check_out_dir, output_dir
from gradleak.core.knowledge import Knowledge
from gradleak.core.signals import hold_interrupts, release_interrupts
from gradleak.core.update import SharedUpdate
from gradleak.scenario.case import Case, ServerView
from gradleak.scenario.config import RunConfig
from gradleak.scenario.observe import psnr_observer, score
from gradleak.scenario.outputs import prior_nearest, run_metrics, write_outputs
from gradleak.scenario.plan import RunPlan, plan_run
from gradleak.scenario.run import AttackOutcome, RunResult, attacked_view
from gradleak.scenario.snapshots import SnapshotRecorder

# metrics.json of a run attacked in a stack: how many runs the stack held, and the stack's
# attack time (`seconds` is this time over that many runs).
STACKED = "stacked"
STACKED_SECONDS = "stacked_seconds"
# The modality whose attacks stack updates with per-update observers (text attacks run
# their updates one after another, each with its own token set).
STACKED_MODALITY = "image"

# publish(i, write): write run i by calling write(folder) on the folder it is to go to.
Publish = Callable[[int, Callable[[Path], RunResult]], object]


def stackable(config: RunConfig) -> bool:
    """Whether a run may be attacked in a stack with others (`run_stacked`).

    Its attack must attack several updates, each watched by its own observer, in one
    computation on images (`GradientMatchingAttack.stacks_observed_updates`: Adam, without
    a prior that makes the updates run in turn), and the run must not stop at a target
    PSNR (a stack cannot stop one update's trials alone) nor fit itself to a time budget
    (`budget`: the run's own iterations come from timing it alone).

    Args:
        config: the run's settings.

    Returns:
        True when `run_stacked` gives this run what `run_attack` gives it.
    """
    from gradleak import attacks

    if config.modality != STACKED_MODALITY or config.stop_psnr is not None:
        return False
    if config.budget is not None:
        return False
    attack = attacks.get(config.attack).with_options(config.attack_options)
    # The attack itself says whether its observed updates share one computation; updates
    # attacked in turn would gain nothing from a stack, and workers would get fewer jobs.
    return isinstance(attack, GradientMatchingAttack) and attack.stacks_observed_updates()


@dataclass
class _Member:
    """One run of a stack: its plan, case and update, and what its attack is given."""

    plan: RunPlan
    case: Case
    update: SharedUpdate
    attacked: ServerView


def run_stacked(configs: Sequence[RunConfig], publish: Publish | None = None) -> list[RunResult]:
    """Run `configs` (runs of one attack, `stackable`) as stacked attacks; write each run.

    Args:
        configs: the runs; each config's `out` is where its run goes unless `publish`
            chooses.
        publish: called as `publish(i, write)` for each run in order once every attack has
            returned; it writes run i by calling `write(folder)` (a study writes into a
            partial folder it then publishes). None: run i is written to its `out`.

    Returns:
        One result per config, in order: what `run_attack` returns, with `seconds` the
        stack's time over its runs.

    Raises:
        GradleakError: a run that cannot run (settings, data), a stack the attack refuses
            (e.g. one that does not fit in memory), a run directory that cannot be written
            (without `publish`: one that holds files is refused before any work).
        KeyboardInterrupt: Ctrl-C or SIGTERM reached the attack: nothing was written. One
            that arrives while the runs are written waits until all are written.
    """
    if publish is None:  # a bad run directory costs no work, as with `run_attack`
        for config in configs:
            check_out_dir(Path(config.out or config.default_out()), overwrite=False)
    members = [_member(plan_run(config)) for config in configs]
    outcomes: list[AttackOutcome | None] = [None] * len(members)
    sizes = [1] * len(members)  # how many runs each run was attacked with
    for stack in _stacks(members):
        # After Ctrl-C an attack may return fewer reconstructions (L-BFGS): those stay None.
        for i, outcome in zip(stack, _attack([members[i] for i in stack]), strict=False):
            outcomes[i], sizes[i] = outcome, len(stack)
    if any(o is None or o.reconstruction.interrupted for o in outcomes):
        raise KeyboardInterrupt  # an interrupted attack is no result: nothing is written
    # The attacks are done: an interrupt now waits until every run is written.
    hold_interrupts()
    results: list[RunResult] = []
    try:
        for i, (member, outcome) in enumerate(zip(members, outcomes, strict=True)):
            assert outcome is not None
            stack = {STACKED: sizes[i], STACKED_SECONDS: outcome.reconstruction.seconds * sizes[i]}
            write = _writer(member.plan, outcome, stack)
            if publish is None:
                results.append(write(member.plan.output.out_dir))
            else:
                results.append(_published(publish, i, write))
    finally:
        held = release_interrupts()
    if held:
        raise KeyboardInterrupt
    return results


def _published(publish: Publish, i: int, write: Callable[[Path], RunResult]) -> RunResult:
    """Run i written through `publish`, keeping what `write` returned."""
    kept: list[RunResult] = []

    def keep(folder: Path) -> RunResult:
        kept.append(write(folder))
        return kept[-1]

    publish(i, keep)
    if not kept:
        raise GradleakError(f"run {i + 1} of the stack was not written")
    return kept[0]


def _member(plan: RunPlan) -> _Member:
    case, update, attacked = attacked_view(plan)
    return _Member(plan, case, update, attacked)


def _stacks(members: Sequence[_Member]) -> list[list[int]]:
    """The runs, split into stacks whose attacked model and threat model (labels aside)
    are the same: each stack is one `reconstruct_many`."""
    stacks: list[list[int]] = []
    for i, member in enumerate(members):
        for stack in stacks:
            if _shares_attack(members[stack[0]], member):
                stack.append(i)
                break
        else:
            stacks.append([i])
    return stacks


def _shares_attack(a: _Member, b: _Member) -> bool:
    """Whether two runs' attacks can be one stack: the same model state, threat model
    (labels aside) and update kind."""
    return (
        a.update.kind == b.update.kind
        and _same_knowledge(a.attacked.knowledge, b.attacked.knowledge)
        and _same_model(a.attacked.model, b.attacked.model)
    )


def _same_knowledge(a: Knowledge, b: Knowledge) -> bool:
    # Clients' own ADMM states make each update's problem its own.
    states = [k.admm.states for k in (a, b) if k.admm is not None]
    if any(s is not None for s in states):
        return False
    return a.describe() == b.describe() and a.sequence_lengths == b.sequence_lengths


def _same_model(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    left, right = a.state_dict(), b.state_dict()
    if type(a) is not type(b) or left.keys() != right.keys():
        return False
    return all(torch.equal(left[name], right[name]) for name in left)


def _attack(members: Sequence[_Member]) -> list[AttackOutcome]:
    """One stack: `reconstruct_many` over the members' updates, each observed and scored
    against its own truth, as `execute` does for one run."""
    first = members[0]
    recorders = [SnapshotRecorder(m.plan.output.snapshots) for m in members]
    observers = [
        psnr_observer(m.case, m.plan.output.stop_psnr, recorder=r)
        for m, r in zip(members, recorders, strict=True)
    ]
    reconstructions = first.plan.attack.reconstruct_many(  # type: ignore[attr-defined]
        [m.update for m in members],
        first.attacked.model,
        [m.attacked.knowledge for m in members],
        seed=[m.plan.seed for m in members],
        progress=first.plan.output.progress,
        observers=observers,
    )
    outcomes = []
    for member, recorder, rec in zip(members, recorders, reconstructions, strict=False):
        # The stack's time, split equally over the runs attacked in it.
        rec = replace(rec, seconds=rec.seconds / len(members))
        evaluation = score(member.attacked, member.case.client.batch, rec)
        final = member.attacked.decode(rec.images)[evaluation.matching]
        recorder.observe_final(rec.iterations, final)
        attack = member.plan.attack
        outcomes.append(
            AttackOutcome(
                member.case, member.attacked, attack, member.update, rec, evaluation, recorder
            )
        )
    return outcomes


def _writer(
    plan: RunPlan, outcome: AttackOutcome, stack: Mapping[str, object]
) -> Callable[[Path], RunResult]:
    """Writes one run of a stack as `run_attack` writes it, with `stack` in its metrics."""

    def write(folder: Path) -> RunResult:
        nearest = prior_nearest(outcome)
        metrics = {**run_metrics(plan, outcome, nearest), **stack}
        try:
            # Written whole or not at all: a run that fails while writing leaves no half run.
            with output_dir(folder) as out:
                write_outputs(out, plan, outcome, metrics, nearest)
        except OSError as exc:
            raise GradleakError(f"cannot write the run directory {folder}: {exc}") from exc
        return RunResult(**vars(outcome), metrics=metrics, out_dir=Path(folder))

    return write
