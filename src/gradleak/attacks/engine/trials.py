"""What every optimiser of stacked trials shares: the inputs per trial, scoring, results."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch.func import vmap
from tqdm.auto import tqdm

from gradleak.attacks.engine.hooks import Observer, StopAttack
from gradleak.attacks.engine.status import TrialStatus, run_status
from gradleak.attacks.engine.step import TrialInputs
from gradleak.attacks.matching.problem import LossTerms, MatchingProblem
from gradleak.attacks.reconstruction import Status


def best_trial(losses: torch.Tensor) -> int:
    """Index of the lowest finite loss (a diverged trial never wins).

    Args:
        losses: one matching loss per trial, a 1-D tensor of K values.

    Returns:
        The index in 0..K−1 of the smallest finite loss; 0 when no loss is finite.
    """
    return int(torch.where(torch.isfinite(losses), losses, torch.inf).argmin())


@dataclass
class TrialsResult:
    """Final state of every trial: images K×B×C×H×W, labels K×B, matching loss K.

    K counts the trials that ran: a run split into memory groups (`memory.run_in_groups`)
    and interrupted or stopped before its last group holds fewer than it was given.

    Attributes:
        images: each trial's inputs K×B×C×H×W in the attacked (normalised) space. Adam:
            the last iterate (inside the box when boxed), or with `keep_best` the iterate of
            the lowest loss seen; L-BFGS: the best iterate seen.
        labels: each trial's K×B integer labels: the fixed labels, or the argmax of the
            trial's optimised soft labels.
        losses: each trial's final matching loss (the optimised one, prior included), K
            values. Adam: scored after the last step (NaN when Ctrl-C landed while
            scoring); L-BFGS: the best loss seen.
        history: one row per logged iteration: `iteration`, `trial` (the trial with the
            smallest distance; for L-BFGS the running one), `loss` (its optimised loss),
            `distance` (its gradient-matching distance) and any columns the observer added.
        iterations: the most steps any trial took (L-BFGS: outer steps).
        loss_evaluations: evaluations of the matching loss (Adam: the final scoring of
            every trial included).
        interrupted: Ctrl-C ended the run.
        stopped: an observer ended the run (StopAttack).
        trial_iterations: the steps each trial took, in trial order.
        compile_seconds: time spent compiling (the first compiled step included).
        compiled: the step ran through torch.compile.
        seconds: the optimisation loop's time, compile time included.
        distances: each trial's gradient-matching distance (no prior terms) at the inputs
            in `images`, K values: what restart selection ranks.
        statuses: each trial's verdict (ok, diverged, no progress; interrupted when
            Ctrl-C landed while scoring). A diverged trial's `images` are its start.
    """

    images: torch.Tensor
    labels: torch.Tensor
    losses: torch.Tensor
    history: list[dict[str, float | int | None]] = field(default_factory=list)
    iterations: int = 0
    loss_evaluations: int = 0
    interrupted: bool = False
    stopped: bool = False  # an observer ended the run (StopAttack)
    trial_iterations: list[int] = field(default_factory=list)
    compile_seconds: float = 0.0  # spent compiling (the first compiled step included)
    compiled: bool = False
    seconds: float = 0.0  # the optimisation loop, compile time included
    distances: torch.Tensor = field(default_factory=lambda: torch.empty(0, device="cpu"))
    statuses: list[TrialStatus] = field(default_factory=list)
    # The compile setting, what it decided and why, and inductor's cache hits and misses
    # (`gradleak.attacks.engine.compiling.CompilePlan.finish`); empty from the engines.
    compile_report: dict[str, object] = field(default_factory=dict)
    # Each trial's own loss evaluations, in trial order, where they differ between trials
    # (L-BFGS); empty where every trial evaluates once per step (Adam).
    trial_evaluations: list[int] = field(default_factory=list)
    # The stacked step calls the run made (what a compiled step's time is divided by).
    step_calls: int = 0


def selection_scores(distances: torch.Tensor, statuses: Sequence[TrialStatus]) -> torch.Tensor:
    """The distances restart selection ranks: a diverged trial's is NaN while another is not.

    Args:
        distances: each trial's gradient-matching distance (no prior), K values.
        statuses: each trial's verdict, K of them.

    Returns:
        A copy of `distances` in which, when some trial has not diverged, every diverged
        trial's value is NaN; `best_trial` of it is the trial selection keeps.
    """
    diverged = [s.status is Status.DIVERGED for s in statuses]
    scores = distances.detach().clone()
    if not all(diverged):
        for k, out in enumerate(diverged):
            if out:
                scores[k] = math.nan
    return scores


@dataclass(frozen=True)
class Selection:
    """Restart selection over some trials: the kept one and the reconstruction's status.

    Attributes:
        best: the kept trial's position among the trials selected from.
        distances: their gradient-matching distances (no prior), in trial order.
        statuses: their verdicts, in trial order.
        status: the reconstruction's status (`run_status` of the kept trial's).
    """

    best: int
    distances: list[float]
    statuses: list[TrialStatus]
    status: TrialStatus


def select(result: TrialsResult, rows: range) -> Selection:
    """Keep the trial in `rows` with the smallest finite distance that has not diverged.

    Inverting Gradients' rule: trials are ranked by the gradient-matching distance of their
    final inputs, without the prior terms the optimiser also minimised. A diverged trial
    wins only when every trial diverged.

    Args:
        result: the optimisation's trials.
        rows: the trials to select from (one update's restarts).

    Returns:
        The kept trial, the trials' distances and verdicts, and the reconstruction's status.
    """
    distances = result.distances[rows.start : rows.stop]
    statuses = result.statuses[rows.start : rows.stop]
    best = best_trial(selection_scores(distances, statuses))
    steps = result.trial_iterations[rows.start : rows.stop] or [result.iterations]
    return Selection(
        best,
        [float(v) for v in distances],
        list(statuses),
        run_status(statuses[best], result.interrupted, max(steps)),
    )


def hard_labels(labels: torch.Tensor) -> torch.Tensor:
    return labels if labels.dtype == torch.long else labels.argmax(dim=-1)


def progress_bar(total: int, enabled: bool, desc: str) -> tqdm:
    # `delay` keeps short runs quiet: the bar appears only after two seconds.
    return tqdm(
        total=total,
        desc=desc,
        delay=2.0,
        mininterval=0.5,
        disable=None if enabled else True,  # None: only on a terminal
        leave=False,
    )


def record(
    history: list[dict[str, float | int | None]],
    iteration: int,
    losses: torch.Tensor,
    distances: torch.Tensor,
    images: torch.Tensor,
    observer: Observer | None,
    trial: int | None = None,
) -> float:
    """Append one history row for the trial with the smallest distance; return its loss.

    The observer is given `distances` (what selection ranks), so the trial it scores is the
    one selection would keep. When it raises `StopAttack`, the row is still appended with
    the columns the exception carries, and the exception goes on to the optimiser.
    """
    best = best_trial(distances)
    loss = float(losses[best])
    row: dict[str, float | int | None] = {
        "iteration": iteration,
        "trial": best if trial is None else trial,
        "loss": loss,
        "distance": float(distances[best]),
    }
    if observer is not None:
        try:
            if isinstance(observer, UpdateObservers):  # several updates' stacked trials
                columns = observer.record(iteration, losses, distances, images)
            else:
                columns = observer(iteration, distances.detach(), images.detach())
            row.update(columns or {})
        except StopAttack as stop:
            row.update(stop.columns)
            history.append(row)
            raise
    history.append(row)
    return loss


class UpdateObservers:
    """The observer of several updates' stacked trials: each update's own history and observer.

    `reconstruct_many` stacks update i's K trials as rows i·K … i·K+K−1. At every row the
    engine records, each update gets the row its own run would have recorded (`record` on
    its trials only: the best of them, its loss and distance, its observer's columns), so
    an observer that scores one update against its own truth sees only that update's trials.
    An update whose observer raised `StopAttack` is no longer observed (its trials go on
    with the stack); the stack stops once every observed update has stopped.

    Args:
        trials: K, the trials of each update.
        observers: one per update, in stacking order; None: that update is not observed
            (its history is still kept).
    """

    def __init__(self, trials: int, observers: Sequence[Observer | None]) -> None:
        self.trials = trials
        self.observers = list(observers)
        self.histories: list[list[dict[str, float | int | None]]] = [[] for _ in self.observers]
        self._stopped = [False] * len(self.observers)

    def record(
        self, iteration: int, losses: torch.Tensor, distances: torch.Tensor, images: torch.Tensor
    ) -> None:
        """Append each update's row; raise `StopAttack` once every observed update stopped."""
        k = self.trials
        for i, observer in enumerate(self.observers):
            rows = slice(i * k, (i + 1) * k)
            watching = None if self._stopped[i] else observer
            try:
                history = self.histories[i]
                record(history, iteration, losses[rows], distances[rows], images[rows], watching)
            except StopAttack:
                self._stopped[i] = True
        observed = [stopped for stopped, o in zip(self._stopped, self.observers, strict=True) if o]
        if observed and all(observed):
            raise StopAttack("every stacked update's observer stopped")


def per_trial(value: float | Sequence[float], k: int, name: str) -> list[float]:
    values = [value] * k if isinstance(value, (int, float)) else list(value)
    if len(values) != k:
        raise ValueError(f"{name}: need one value per trial ({k}), got {len(values)}")
    return values


def trial_inputs(
    images: torch.Tensor,
    labels: torch.Tensor,
    problem: MatchingProblem,
    targets: Mapping[str, torch.Tensor] | None,
    tv_weights: Sequence[float] | None,
) -> TrialInputs:
    """Stack what the K trials of `images` attack: labels, target update, TV weight."""
    k = images.shape[0]
    tv = problem.tv_weight if tv_weights is None else tv_weights
    device = images.device
    return TrialInputs(
        labels=labels.detach().to(device),
        target=problem.target
        if targets is None
        else {n: targets[n].to(device) for n in problem.names},
        tv_weight=torch.tensor(
            per_trial(tv, k, "tv_weights"), dtype=images.dtype, device=images.device
        ),
        labels_per_trial=labels.dim() > 1,
        target_per_trial=targets is not None,
    )


class RowIndex:
    """Index tensors of trial rows on one device, each made once per distinct set of rows.

    The running trials change only at the optimisers' checks (Adam), or take a few sets
    that recur (L-BFGS's trials asking for an evaluation); an index built from a Python
    list at every step would copy it to the device every iteration (on CUDA a copy that
    also waits for the device). The most recent `KEEP` sets are kept.

    Args:
        device: where the indexed tensors are.
    """

    KEEP = 64

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._index: dict[tuple[int, ...], torch.Tensor] = {}

    def __call__(self, rows: Sequence[int]) -> torch.Tensor:
        """The int64 index of `rows` on the device (the same tensor for the same rows)."""
        key = tuple(rows)
        index = self._index.pop(key, None)
        if index is None:
            index = torch.tensor(key, dtype=torch.long, device=self.device)
            if len(self._index) >= self.KEEP:  # forget the least recently used set
                del self._index[next(iter(self._index))]
        self._index[key] = index  # most recently used last
        return index


def on_device(
    problem: MatchingProblem, images: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The trials' starting inputs and labels on the problem's device (moved once, before
    the loop; starts are drawn on the CPU so a seed gives the same start on any device)."""
    device = problem.device
    return images.to(device), labels.to(device)


def score_trials(problem: MatchingProblem, images: torch.Tensor, inputs: TrialInputs) -> LossTerms:
    """The matching loss and distance of every trial (no gradient with respect to the images)."""
    axes = (0, 0 if inputs.labels_per_trial else None, 0 if inputs.target_per_trial else None, 0)
    with torch.no_grad():
        loss, distance = vmap(problem.loss_terms, in_dims=axes)(
            images, inputs.labels, inputs.target, inputs.tv_weight
        )
    return LossTerms(loss, distance)
