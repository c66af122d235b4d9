"""Adam on K stacked trials: one batched step for all trials, per-trial state and schedules.

Adam trials are stacked on a leading trial axis and evaluated with one `vmap` of the
functional matching loss, so restarts cost one batched forward/backward instead of K.
Adam is element-wise, so stacking does not couple the trials.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence

import torch

from gradleak.attacks.engine.consistency import ConsistencyTerm, GroupConsistency
from gradleak.attacks.engine.hooks import Observer, StopAttack
from gradleak.attacks.engine.memory import ensure_trials_fit
from gradleak.attacks.engine.status import TrialStatus, TrialWatch
from gradleak.attacks.engine.step import Notice, TrialInputs, TrialStep, print_notice
from gradleak.attacks.engine.trials import (
    RowIndex,
    TrialsResult,
    hard_labels,
    on_device,
    per_trial,
    progress_bar,
    record,
    score_trials,
    selection_scores,
    trial_inputs,
)
from gradleak.attacks.matching.problem import LossTerms, MatchingProblem
from gradleak.attacks.reconstruction import Status

DECAY_FRACTIONS = (3 / 8, 5 / 8, 7 / 8)
DECAY_FACTOR = 0.1


def decay_milestones(iterations: int) -> list[int]:
    return [int(iterations * f) for f in DECAY_FRACTIONS]


class BatchedAdam:
    """Adam (as torch.optim.Adam, no weight decay) on a K×… tensor, one trial per row.

    A trial advances only when it is among the `index` rows given to `step`, so a trial
    that stopped early keeps its state and its images. Step sizes and the decay schedule
    are per trial and live on the host, so the hot loop never waits for the device.
    """

    def __init__(
        self,
        param: torch.Tensor,
        lr: Sequence[float],
        iterations: Sequence[int],
        *,
        lr_decay: bool = True,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        k = param.shape[0]
        if len(lr) != k or len(iterations) != k:
            raise ValueError(f"need one lr and one iteration count per trial ({k})")
        self.param = param
        self.base_lr = [float(v) for v in lr]
        self.milestones = [decay_milestones(n) if lr_decay else [] for n in iterations]
        self.betas = betas
        self.eps = eps
        self.steps = [0] * k
        self.exp_avg = torch.zeros_like(param)
        self.exp_avg_sq = torch.zeros_like(param)
        self._view = (k,) + (1,) * (param.dim() - 1)
        self._t = torch.zeros(k, dtype=param.dtype, device=param.device)
        self._lr_values: list[float] = []
        self._lr = torch.empty(0, dtype=param.dtype, device=param.device)
        self._rows = RowIndex(param.device)

    def lr(self, k: int) -> float:
        """Trial k's step size for its next step."""
        passed = sum(self.steps[k] >= m for m in self.milestones[k])
        return self.base_lr[k] * DECAY_FACTOR**passed

    def _refresh_lr(self) -> None:
        lrs = [self.lr(k) for k in range(len(self.steps))]
        if lrs != self._lr_values:
            self._lr_values = lrs
            self._lr = torch.tensor(lrs, dtype=self.param.dtype, device=self.param.device)

    @torch.no_grad()
    def step(self, grad: torch.Tensor, index: list[int] | None = None) -> None:
        """Apply one step to the trials in `index` (None: all); `grad` has their rows."""
        rows = range(len(self.steps)) if index is None else index
        self._refresh_lr()  # host-side schedule: a new tensor only when a step size changes
        rows_t = None if index is None else self._rows(index)
        pick = (lambda t: t) if rows_t is None else (lambda t: t[rows_t])
        if rows_t is None:
            self._t += 1
        else:
            self._t[rows_t] += 1
        for k in rows:
            self.steps[k] += 1
        b1, b2 = self.betas
        t = pick(self._t).reshape((-1,) + self._view[1:])
        lr = pick(self._lr).reshape(t.shape)
        step_size = lr / (1 - torch.pow(b1, t))
        correction2 = (1 - torch.pow(b2, t)).sqrt()
        param, m, v = pick(self.param), pick(self.exp_avg), pick(self.exp_avg_sq)
        m.mul_(b1).add_(grad, alpha=1 - b1)
        v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        param.sub_(step_size * m / (v.sqrt() / correction2 + self.eps))
        if rows_t is not None:  # indexing copied the rows: write them back
            self.param[rows_t], self.exp_avg[rows_t], self.exp_avg_sq[rows_t] = param, m, v


def _clamp(x: torch.Tensor, bounds: tuple[torch.Tensor, torch.Tensor] | None) -> None:
    """Project stacked images onto the per-channel pixel box, in place."""
    if bounds is not None:
        with torch.no_grad():
            x.clamp_(min=bounds[0], max=bounds[1])


def optimize_adam(
    problem: MatchingProblem,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    lr: float | Sequence[float],
    iterations: int | Sequence[int],
    signed: bool = True,
    bounds: tuple[torch.Tensor, torch.Tensor] | None = None,
    lr_decay: bool = True,
    log_every: int = 100,
    observer: Observer | None = None,
    progress: bool = True,
    targets: Mapping[str, torch.Tensor] | None = None,
    tv_weights: Sequence[float] | None = None,
    tolerance: float = 0.0,
    compile: bool = False,
    notice: Notice = print_notice,
    check_memory: bool = True,
    consistency: GroupConsistency | None = None,
    keep_best: bool = False,
) -> TrialsResult:
    """Adam on K stacked trials (`images` is K×B×C×H×W), all in one computation.

    Each trial may have its own step size (`lr`), iteration budget and decay schedule
    (`iterations`), TV weight (`tv_weights`), target update (`targets`, K× each tensor:
    independent images) and labels: `labels` is B integers shared by all trials, K×B
    integers, or K×B×classes soft labels that are optimised too. A trial stops early when
    its loss is at most `tolerance` or not finite (checked every `log_every` iterations,
    so the hot loop never waits for the device); stopped trials cost nothing more.
    The trials run where the problem's replica is (`MatchingProblem.device`): the starts,
    labels, targets and bounds are moved there once, before the loop.

    Every step computes each running trial's matching loss and its gradient with respect
    to the inputs (and soft labels), then takes one Adam step (torch.optim.Adam's update,
    betas (0.9, 0.999), eps 1e-8, no weight decay) per trial. After the loop every trial is
    scored once more at its final inputs (loss and gradient-matching distance) and judged
    (`gradleak.attacks.engine.status`): a trial that diverged is put back to its start and
    scored there. Ctrl-C or an observer's `StopAttack` ends the loop; the trials are still
    scored and returned.

    Args:
        problem: the matching problem (shared update, replay, objective, prior).
        images: the trials' starting inputs K×B×C×H×W, normalised space (not modified).
        labels: B integer labels (shared), K×B integer labels, or K×B×classes soft
            labels (logits; optimised by a second Adam with the same schedule).
        lr: the base step size, one for all trials or one per trial; > 0.
        iterations: each trial's step budget, one for all or one per trial; >= 0.
        signed: step with the sign of the inputs' gradient (the labels' gradient is
            always used as it is). Default True.
        bounds: per-channel (lower, upper) C×1×1 box the inputs are clamped to after
            every step; None (default): unbounded.
        lr_decay: multiply each trial's step size by 0.1 at 3/8, 5/8 and 7/8 of its
            budget. Default True.
        log_every: iterations between history rows, observer calls and the `tolerance`
            check; >= 1 (default 100).
        observer: the engine's callback hook (`gradleak.attacks.engine.hooks`); None:
            nothing watches.
        progress: show a progress bar on a terminal (default True).
        targets: one target update per trial, each tensor K× the parameter's shape;
            None (default): every trial matches `problem.target`.
        tv_weights: one prior weight per trial; None (default): `problem.tv_weight`.
        tolerance: stop a trial once its loss is at most this (default 0).
        compile: torch.compile the step (falls back in one line when it cannot).
        notice: where that one line goes (default: standard error).
        check_memory: refuse, before allocating the trials, a run that would not fit in
            free memory (default True).
        consistency: pull each group of consecutive trials toward its registered mean
            (GradInversion's group consistency, `gradleak.attacks.engine.consistency`);
            None (default): the trials stay independent.
        keep_best: return each trial's lowest-loss iterate seen (its loss, prior included,
            as computed by the step, and the final iterate scored once more) instead of its
            last one. Tracked on the device with `torch.where` on the stacked rows, so the
            hot loop reads nothing back. Default False: the last iterate.

    Returns:
        The trials' final inputs, labels (K×B integers), losses, distances, verdicts,
        history, steps per trial, loss evaluations and timing.

    Raises:
        GradleakError: when `check_memory` and the K stacked trials would not fit.
        ValueError: when a per-trial `lr`, `iterations` or `tv_weights` does not have K
            values, or K does not split into `consistency`'s groups.
    """
    k = images.shape[0]
    images, labels = on_device(problem, images, labels)
    if bounds is not None:
        bounds = (bounds[0].to(images.device), bounds[1].to(images.device))
    inputs = trial_inputs(images, labels, problem, targets, tv_weights)
    budgets = [int(n) for n in per_trial(iterations, k, "iterations")]
    step = TrialStep(problem, compile=compile, notice=notice)
    if check_memory:
        ensure_trials_fit(problem, images, inputs, k)
    x = images.detach().clone()
    soft_labels = inputs.labels.clone() if inputs.soft else None
    rates = per_trial(lr, k, "lr")
    group = None
    if consistency is not None:
        fixed = None if inputs.soft else inputs.labels.expand(k, -1)
        group = ConsistencyTerm(consistency, k, fixed)
    adam = BatchedAdam(x, rates, budgets, lr_decay=lr_decay)
    label_adam = None
    if soft_labels is not None:
        label_adam = BatchedAdam(soft_labels, rates, budgets, lr_decay=lr_decay)
    active = [i for i in range(k) if budgets[i] > 0]
    rows = RowIndex(x.device)  # the running trials' index, rebuilt only when they change
    latest = torch.full((k,), torch.nan, dtype=x.dtype, device=x.device)
    latest_distance = torch.full_like(latest, torch.nan)
    watch = TrialWatch(k)
    evaluations = k  # the final scoring of every trial
    best = _BestIterate(x, soft_labels) if keep_best else None
    history: list[dict[str, float | int | None]] = []
    total = max(budgets)
    done = 0
    interrupted = stopped = False
    run_start = time.perf_counter()
    bar = progress_bar(total, progress, "matching")
    try:
        for iteration in range(total):
            active = [i for i in active if adam.steps[i] < budgets[i]]
            if not active:
                break
            current = inputs if soft_labels is None else _with_labels(inputs, soft_labels)
            if group is not None and group.due(iteration):
                group.refresh(x)
            grad_x, grad_labels, losses, distances = _step_rows(step, x, current, active, rows)
            if best is not None:  # the matching loss of x before this step (no group term,
                # as the final scoring), kept where it is a trial's lowest
                best.see(x, soft_labels, losses, None if len(active) == k else rows(active))
            if group is not None:
                grad_x, losses = group.add(x, None if len(active) == k else active, grad_x, losses)
            evaluations += k if step.compile else len(active)
            if len(active) == k:
                latest.copy_(losses)
                latest_distance.copy_(distances)
            else:
                where = rows(active)
                latest[where] = losses
                latest_distance[where] = distances
            if iteration % log_every == 0:
                values = latest.tolist()  # the check's one device sync
                for i in active:
                    watch.see(i, iteration, values[i])
                loss = record(history, iteration, latest, latest_distance, x, observer)
                bar.set_postfix(loss=f"{loss:.4g}")
                running = _still_running(active, values, tolerance)
                if not running:
                    break
                if running != active:  # trials stopped at this check do not step again
                    keep = [j for j, i in enumerate(active) if i in running]
                    keep_t = torch.tensor(keep, dtype=torch.long, device=x.device)
                    grad_x = grad_x[keep_t]
                    grad_labels = None if grad_labels is None else grad_labels[keep_t]
                    active = running
            index = None if len(active) == k else active
            adam.step(grad_x.sign() if signed else grad_x, index)
            if label_adam is not None:
                label_adam.step(grad_labels, index)
            _clamp(x, bounds)
            done = iteration + 1
            bar.update(1)
    except StopAttack:
        stopped = True
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    seconds = time.perf_counter() - run_start
    _clamp(x, bounds)  # again: an interrupt may land between the step and the clamp
    if best is not None and done > 0:
        try:
            # The last iterate has not been scored yet: score it, then keep the better.
            current = inputs if soft_labels is None else _with_labels(inputs, soft_labels)
            best.see(x, soft_labels, score_trials(problem, x, current).loss, None)
            evaluations += k
            best.restore(x, soft_labels)
        except KeyboardInterrupt:
            interrupted = True  # the last iterates stay; they are scored below
    final_inputs = inputs if soft_labels is None else _with_labels(inputs, soft_labels)
    try:
        terms, statuses, reset = _judge(
            problem, watch, images, inputs, x, soft_labels, done, tolerance
        )
        evaluations += reset
    except KeyboardInterrupt:
        # Interrupted while scoring: keep the images, rank trials as unknown.
        interrupted = True
        unknown = torch.full((k,), torch.nan, dtype=x.dtype, device=x.device)
        terms = LossTerms(unknown, unknown.clone())
        statuses = [TrialStatus(Status.INTERRUPTED, "stopped by an interrupt while scoring")] * k
    # A stopped run's last row is this iteration's already, and the observer is not called
    # again after it stopped the run.
    if not (stopped and history and history[-1]["iteration"] == done):
        try:
            ranked = selection_scores(terms.distance, statuses)
            record(history, done, terms.loss, ranked, x, None if stopped else observer)
        except StopAttack:
            stopped = True
        except KeyboardInterrupt:
            interrupted = True
    out_labels = hard_labels(final_inputs.labels)
    if not inputs.labels_per_trial:
        out_labels = out_labels.expand(k, -1)
    return TrialsResult(
        x,
        out_labels.clone(),
        terms.loss,
        history,
        done,
        evaluations,
        interrupted,
        stopped,
        trial_iterations=list(adam.steps),
        compile_seconds=step.compile_seconds,
        step_calls=step.calls,
        compiled=step.compiled,
        seconds=seconds,
        distances=terms.distance,
        statuses=statuses,
    )


class _BestIterate:
    """Each trial's lowest-loss iterate so far, kept on the device (no host reads)."""

    def __init__(self, x: torch.Tensor, soft_labels: torch.Tensor | None) -> None:
        self.x = x.detach().clone()
        self.labels = None if soft_labels is None else soft_labels.detach().clone()
        self.loss = torch.full((x.shape[0],), math.inf, dtype=x.dtype, device=x.device)

    @torch.no_grad()
    def see(
        self,
        x: torch.Tensor,
        soft_labels: torch.Tensor | None,
        losses: torch.Tensor,
        rows: torch.Tensor | None,
    ) -> None:
        """Keep the rows of `x` (all, or `rows`) whose `losses` beat the best so far.

        A NaN loss never compares lower, so a diverging trial keeps its last finite best.
        """
        pick = (lambda t: t) if rows is None else (lambda t: t[rows])
        better = losses.to(self.loss.dtype) < pick(self.loss)
        view = (-1,) + (1,) * (x.dim() - 1)
        kept_x = torch.where(better.view(view), pick(x), pick(self.x))
        kept_loss = torch.where(better, losses.to(self.loss.dtype), pick(self.loss))
        kept_labels = None
        if self.labels is not None and soft_labels is not None:
            label_view = (-1,) + (1,) * (soft_labels.dim() - 1)
            kept_labels = torch.where(better.view(label_view), pick(soft_labels), pick(self.labels))
        if rows is None:
            self.x.copy_(kept_x)
            self.loss.copy_(kept_loss)
            if kept_labels is not None:
                self.labels.copy_(kept_labels)
        else:
            self.x[rows], self.loss[rows] = kept_x, kept_loss
            if kept_labels is not None:
                self.labels[rows] = kept_labels

    @torch.no_grad()
    def restore(self, x: torch.Tensor, soft_labels: torch.Tensor | None) -> None:
        """Put every trial's best iterate (one that never scored finite keeps its last)."""
        seen = torch.isfinite(self.loss).view((-1,) + (1,) * (x.dim() - 1))
        x.copy_(torch.where(seen, self.x, x))
        if self.labels is not None and soft_labels is not None:
            label_seen = seen.view((-1,) + (1,) * (soft_labels.dim() - 1))
            soft_labels.copy_(torch.where(label_seen, self.labels, soft_labels))


def _judge(
    problem: MatchingProblem,
    watch: TrialWatch,
    start: torch.Tensor,
    inputs: TrialInputs,
    x: torch.Tensor,
    soft_labels: torch.Tensor | None,
    done: int,
    tolerance: float,
) -> tuple[LossTerms, list[TrialStatus], int]:
    """Score every trial at its final inputs, judge it, put diverged trials back to their start.

    Returns the final loss terms, the verdicts and how many trials were scored again.
    """
    current = inputs if soft_labels is None else _with_labels(inputs, soft_labels)
    terms = score_trials(problem, x, current)
    flat = x.flatten(1)
    moved = (flat != start.flatten(1)).any(dim=1)
    finite = torch.isfinite(flat).all(dim=1)
    if soft_labels is not None:
        moved |= (soft_labels != inputs.labels).flatten(1).any(dim=1)
        finite &= torch.isfinite(soft_labels).flatten(1).all(dim=1)
    final = terms.loss.tolist()
    moved_, finite_ = moved.tolist(), finite.tolist()
    statuses = []
    for i, value in enumerate(final):
        watch.see(i, done, value)
        verdict = watch.verdict(i, value, moved=moved_[i], finite=finite_[i], tolerance=tolerance)
        statuses.append(verdict)
    diverged = [i for i, s in enumerate(statuses) if s.status is Status.DIVERGED]
    if not diverged:
        return terms, statuses, 0
    # A diverged trial returns its start: what it shows is then exactly the random start.
    rows = torch.tensor(diverged, device=x.device)
    with torch.no_grad():
        x[rows] = start[rows].to(x.dtype)
        if soft_labels is not None:
            soft_labels[rows] = inputs.labels[rows]
    current = inputs if soft_labels is None else _with_labels(inputs, soft_labels)
    again = score_trials(problem, x[rows], current.select(rows))
    loss, distance = terms.loss.clone(), terms.distance.clone()
    loss[rows], distance[rows] = again.loss, again.distance
    return LossTerms(loss, distance), statuses, len(diverged)


def _step_rows(
    step: TrialStep, x: torch.Tensor, inputs: TrialInputs, active: list[int], index: RowIndex
):
    """The step's outputs for the running trials only."""
    if len(active) == x.shape[0]:
        return step(x, inputs)
    rows = index(active)
    if not step.compile:
        return step(x[rows], inputs.select(rows))
    # A compiled step keeps its input shape (no recompiling): compute all, keep the rows.
    grad_x, grad_labels, losses, distances = step(x, inputs)
    grad_labels = None if grad_labels is None else grad_labels[rows]
    return grad_x[rows], grad_labels, losses[rows], distances[rows]


def _with_labels(inputs: TrialInputs, labels: torch.Tensor) -> TrialInputs:
    return TrialInputs(
        labels, inputs.target, inputs.tv_weight, inputs.labels_per_trial, inputs.target_per_trial
    )


def _still_running(active: list[int], values: list[float], tolerance: float) -> list[int]:
    """Drop trials that reached `tolerance` or whose loss is not finite (at a check only)."""
    return [i for i in active if math.isfinite(values[i]) and values[i] > tolerance]
