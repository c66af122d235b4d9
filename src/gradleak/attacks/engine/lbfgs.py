"""L-BFGS on K stacked trials: per-trial history, line search and termination, one stacked
evaluation at a time.

Every trial is a small program (a generator, `_trial`) that runs L-BFGS on its own flat
variable (its inputs, and its soft labels when they are optimised) and yields what it needs
next: its gradient turned into a search direction (`_Direction`), a point evaluated
(`_Evaluate`), or the end of an outer step (`_OUTER_STEP`). The engine's loop gathers the
pending requests of all trials: the directions of every trial asking in one batched two-loop
recursion (`curvature.CurvatureHistory`), the evaluations in one stacked `TrialStep` call,
each trial at its own candidate point. Trials that converged ask for nothing more, so a
stack costs about the evaluations of its slowest trial, not K times one trial's.

Per trial it does what torch.optim.LBFGS does (history size 100, the first step scaled by
min(1, 1/‖g‖₁), an outer step ending after `inner_iterations` iterations or 5/4 as many
evaluations, when max|g| ≤ 1e-7, or when the step or the loss changes by less than 1e-9),
with the line searches of `line_search.py`, and without re-evaluating a point a line search
already evaluated. The host reads, per stacked evaluation, one row of numbers per trial
(loss, distance, ∇f·d, ‖g‖₁, max|g|), and per batched recursion two per trial (g·d, max|d|):
each trial's accept/reject decisions need them.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass

import torch

from gradleak.attacks.engine.curvature import HISTORY_SIZE, CurvatureHistory
from gradleak.attacks.engine.hooks import Observer, StopAttack
from gradleak.attacks.engine.line_search import LINE_SEARCHES, LineSearch, Probe, Search
from gradleak.attacks.engine.status import TrialWatch
from gradleak.attacks.engine.step import Notice, TrialInputs, TrialStep, print_notice
from gradleak.attacks.engine.trials import (
    RowIndex,
    TrialsResult,
    hard_labels,
    on_device,
    progress_bar,
    record,
    trial_inputs,
)
from gradleak.attacks.matching.problem import MatchingProblem

# An L-BFGS trial has converged when its best loss has not improved for this many steps.
LBFGS_PATIENCE = 10
# torch's termination tests: first-order optimality, and too small a change of step or loss.
TOLERANCE_GRAD = 1e-7
TOLERANCE_CHANGE = 1e-9


@dataclass(frozen=True)
class Evaluation:
    """One evaluated point of one trial, as the trial's program is sent it.

    Attributes:
        loss: the matching loss (prior included).
        distance: the gradient-matching distance (no prior).
        grad: the flat gradient, N values on the device.
        gtd: ∇f·d along the direction the request named (NaN when it named none).
        g_sum: ‖∇f‖₁.
        g_max: max|∇f|.
    """

    loss: float
    distance: float
    grad: torch.Tensor
    gtd: float
    g_sum: float
    g_max: float


@dataclass(frozen=True)
class _Evaluate:
    point: torch.Tensor  # N
    direction: torch.Tensor | None  # the direction ∇f·d is wanted along


@dataclass(frozen=True)
class _Direction:
    grad: torch.Tensor  # N: the trial's gradient, turned into −H·g


_OUTER_STEP = "outer step"  # a trial finished one outer step
Request = _Evaluate | _Direction | str


def optimize_lbfgs(
    problem: MatchingProblem,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    lr: float = 1.0,
    steps: int = 300,
    inner_iterations: int = 20,
    line_search: str | None = None,
    tolerance: float = 0.0,
    log_every: int = 10,
    observer: Observer | None = None,
    progress: bool = True,
    targets: Mapping[str, torch.Tensor] | None = None,
    tv_weights: Sequence[float] | None = None,
    compile: bool = False,
    notice: Notice = print_notice,
) -> TrialsResult:
    """L-BFGS on K stacked trials (`images` is K×B×C×H×W), one stacked evaluation at a time.

    Each trial has its own curvature history (`HISTORY_SIZE` pairs), step size, line search
    and termination, as torch.optim.LBFGS gives one trial; every loss evaluation is one
    stacked call over the trials that need one then, each at its own point (see the
    module's docstring). Trials are independent: a trial's result is the one it gets run
    alone, up to float rounding. They run where the problem's replica is: the starts,
    labels and targets are moved there once.

    A trial optimises its inputs, and its soft labels when they are soft, for up to `steps`
    outer steps. It keeps the best iterate seen (L-BFGS can diverge to NaN late in a run)
    and ends early when its best loss is at most `tolerance`, when its last loss is not
    finite, when its best loss has not improved for `LBFGS_PATIENCE` outer steps, or when
    its gradient is zero (max|g| ≤ 1e-7) at the start of an outer step. Each trial is
    judged from every loss it evaluated (`gradleak.attacks.engine.status`); a trial that
    diverged returns its start, which is then its best iterate. Ctrl-C or an observer's
    `StopAttack` ends every trial; each returns its best iterate so far.

    Args:
        problem: the matching problem (shared update, replay, objective, prior).
        images: the trials' starting inputs K×B×C×H×W, normalised space (not modified).
        labels: B integer labels shared by all trials, K×B integer labels (one row per
            trial), or K×B×classes soft labels (logits, one set per trial, optimised with
            the inputs).
        lr: the step tried first (torch's L-BFGS `lr`, default 1); the very first step of
            a trial is scaled by min(1, 1/‖g‖₁).
        steps: outer steps per trial (default 300).
        inner_iterations: L-BFGS iterations per outer step, torch's `max_iter` (default 20).
        line_search: None or "none" (default; a fixed step), "strong_wolfe" or
            "unit_first" (`gradleak.attacks.engine.line_search`).
        tolerance: end a trial once its best loss is at most this (default 0).
        log_every: outer steps between a trial's history rows and observer calls
            (default 10).
        observer: the engine's callback hook (`gradleak.attacks.engine.hooks`), called per
            trial with the distance at that trial's best iterate and that iterate; None:
            nothing watches.
        progress: show a progress bar on a terminal (default True).
        targets: one target update per trial, each tensor K× the parameter's shape;
            None (default): every trial matches `problem.target`.
        tv_weights: one prior weight per trial; None (default): `problem.tv_weight`.
        compile: torch.compile the step (falls back in one line when it cannot).
        notice: where that one line goes (default: standard error).

    Returns:
        Every trial (K): its best inputs, labels (K×B integers; the argmax of optimised
        soft labels), best loss and the distance there, verdict, history rows (`trial`
        names the trial), outer steps and loss evaluations (one per trial and point).

    Raises:
        KeyError: when `line_search` is not a known line search.
    """
    search = LINE_SEARCHES["none" if line_search is None else line_search]
    k = images.shape[0]
    images, labels = on_device(problem, images, labels)
    inputs = trial_inputs(images, labels, problem, targets, tv_weights)
    step = TrialStep(problem, compile=compile, notice=notice)
    stack = _Stack(problem, images, inputs, step, log_every, observer)
    programs = {
        trial: _trial(
            stack.start(trial),
            stack.history,
            trial,
            lr=lr,
            inner_iterations=inner_iterations,
            search=search,
        )
        for trial in range(k)
    }
    start = time.perf_counter()
    bar = progress_bar(k * steps, progress, f"L-BFGS, {k} trial{'s' if k != 1 else ''}")
    try:
        stack.run(programs, steps, tolerance, bar)
    except StopAttack:
        stack.stopped = True
    except KeyboardInterrupt:
        stack.interrupted = True
    finally:
        bar.close()
        for program in programs.values():
            program.close()
    seconds = time.perf_counter() - start
    return stack.result(step, seconds, tolerance)


def _trial(
    x: torch.Tensor,
    history: CurvatureHistory,
    trial: int,
    *,
    lr: float,
    inner_iterations: int,
    search: LineSearch,
) -> Generator[Request, object, None]:
    """One trial's L-BFGS from the flat point `x`; ends when its gradient is zero."""
    max_evaluations = max(1, inner_iterations * 5 // 4)
    here: Evaluation = yield _Evaluate(x, None)
    previous = here  # the evaluation where the last line search started
    evaluated = True  # `here` belongs to `x`
    d: torch.Tensor | None = None
    t = lr
    gtd = math.nan  # ∇f·d where the last line search started
    iterations = 0
    while True:
        if not evaluated:
            here = yield _Evaluate(x, d)
            evaluated = True
        evaluations = 1  # counted as torch counts the evaluation opening an outer step
        if here.g_max <= TOLERANCE_GRAD:
            return
        for n in range(1, inner_iterations + 1):
            iterations += 1
            if iterations == 1:
                history.reset(trial)
            elif t * (here.gtd - gtd) > 1e-10:  # curvature y·s > 0, from numbers read
                history.push(trial, d.mul(t), here.grad - previous.grad)
            d, gtd, d_max = yield _Direction(here.grad)
            previous = here
            t = min(1.0, 1.0 / here.g_sum) * lr if iterations == 1 else lr
            if not gtd < -TOLERANCE_CHANGE:  # not a descent direction (or NaN): no step
                t = 0.0
                break
            start = Probe(0.0, here.loss, gtd, here)
            found = yield from _along(search(start, t, d_max, n != inner_iterations), x, d)
            t = found.t
            x = x + t * d if t != 0 else x
            evaluations += found.evaluations
            evaluated = found.probe is not None
            if evaluated:
                here = found.probe.payload
            if n == inner_iterations or evaluations >= max_evaluations:
                break
            if evaluated and here.g_max <= TOLERANCE_GRAD:
                break
            if t * d_max <= TOLERANCE_CHANGE:
                break
            if evaluated and abs(here.loss - previous.loss) < TOLERANCE_CHANGE:
                break
        yield _OUTER_STEP


def _along(search: Search, x: torch.Tensor, d: torch.Tensor) -> Generator[Request, object, object]:
    """Run a line search, evaluating each step it asks for at x + t·d."""
    try:
        t = next(search)
        while True:
            here = yield _Evaluate(x + t * d, d)
            t = search.send(Probe(t, here.loss, here.gtd, here))
    except StopIteration as done:
        return done.value


class _Stack:
    """The trials' shared state: history, best iterates, counts; the stacked calls."""

    def __init__(
        self,
        problem: MatchingProblem,
        images: torch.Tensor,
        inputs: TrialInputs,
        step: TrialStep,
        log_every: int,
        observer: Observer | None,
    ) -> None:
        k = images.shape[0]
        self.problem = problem
        self.images = images
        self.inputs = inputs
        self.step = step
        self.log_every = log_every
        self.observer = observer
        self.image_shape = images.shape[1:]
        self.image_size = images[0].numel()
        self.label_shape = inputs.labels.shape[1:] if inputs.soft else None
        self.starts = [self._flat(trial) for trial in range(k)]
        self.history = CurvatureHistory(k, HISTORY_SIZE, self.starts[0])
        self.watch = TrialWatch(k)
        self.best_loss = [math.inf] * k
        self.best_distance = [math.nan] * k
        self.best_point = list(self.starts)
        self.last = [math.inf] * k
        self.evaluations = [0] * k
        self.done = [0] * k  # outer steps completed
        self.logged = [-1] * k  # the outer step of each trial's last history row
        self.rows: list[dict[str, float | int | None]] = []
        self.rows_index = RowIndex(images.device)
        self.interrupted = self.stopped = False

    def _flat(self, trial: int) -> torch.Tensor:
        parts = [self.images[trial].reshape(-1)]
        if self.inputs.soft:
            parts.append(self.inputs.labels[trial].reshape(-1))
        return torch.cat(parts).detach()

    def start(self, trial: int) -> torch.Tensor:
        return self.starts[trial]

    def run(self, programs: dict, steps: int, tolerance: float, bar) -> None:
        """Advance every trial until each one ends; raises StopAttack or KeyboardInterrupt."""
        pending: dict[int, Request] = {}
        stalled = dict.fromkeys(programs, 0)
        before = dict.fromkeys(programs, math.inf)
        if steps <= 0:
            return
        for trial, program in programs.items():
            pending[trial] = next(program)
        while pending:
            for trial, request in list(pending.items()):
                if request != _OUTER_STEP:
                    continue
                # The end of an outer step: the engine's own rules for this trial.
                self.done[trial] += 1
                done = self.done[trial]
                stalled[trial] = stalled[trial] + 1 if self.best_loss[trial] >= before[trial] else 0
                before[trial] = self.best_loss[trial]
                bar.update(1)
                if done % self.log_every == 0:
                    self._record(trial, self.observer)
                ended = (
                    done >= steps
                    or stalled[trial] >= LBFGS_PATIENCE
                    or self.best_loss[trial] <= tolerance
                    or not math.isfinite(self.last[trial])
                )
                if ended:
                    programs[trial].close()
                    del pending[trial]
                    bar.update(steps - done)
                else:
                    self._advance(programs, pending, trial, None)
            asking = sorted(t for t, r in pending.items() if isinstance(r, _Direction))
            if asking:
                self._directions(programs, pending, asking)
                continue
            asking = sorted(t for t, r in pending.items() if isinstance(r, _Evaluate))
            if asking:
                self._evaluate(programs, pending, asking)

    def _advance(self, programs: dict, pending: dict, trial: int, value: object) -> None:
        try:
            pending[trial] = programs[trial].send(value)
        except StopIteration:  # a zero gradient: nothing more can change
            del pending[trial]

    def _directions(self, programs: dict, pending: dict, asking: list[int]) -> None:
        grads = torch.stack([pending[trial].grad for trial in asking])
        d = self.history.directions(asking, grads)
        numbers = torch.stack([(grads * d).sum(1), d.abs().amax(1)]).tolist()
        for i, trial in enumerate(asking):
            # A copy of the row, not a view that keeps the stacked directions alive.
            self._advance(programs, pending, trial, (d[i].clone(), numbers[0][i], numbers[1][i]))

    def _evaluate(self, programs: dict, pending: dict, asking: list[int]) -> None:
        requests = [pending[trial] for trial in asking]
        points = torch.stack([r.point for r in requests])
        r, k = len(asking), len(self.starts)
        index = None if r == k else self.rows_index(asking)
        whole = index is not None and self.step.compile
        if whole:
            # A compiled step keeps its input shape (no recompiling as trials drift apart or
            # end): every trial is evaluated, the idle ones at their best point, and only
            # the asking trials' rows are kept.
            everything = torch.stack([self.best_point[t] for t in range(k)])
            everything[index] = points
            points = everything
        inputs = self.inputs.select(None if whole else index)
        n = points.shape[0]
        images = points[:, : self.image_size].reshape(n, *self.image_shape)
        if self.inputs.soft:
            labels = points[:, self.image_size :].reshape(n, *self.label_shape)
            inputs = dataclasses.replace(inputs, labels=labels)
        grad_x, grad_labels, losses, distances = self.step(images, inputs)
        if whole:
            grad_x, losses, distances = grad_x[index], losses[index], distances[index]
            grad_labels = None if grad_labels is None else grad_labels[index]
        parts = [grad_x.reshape(r, -1)]
        if grad_labels is not None:
            parts.append(grad_labels.reshape(r, -1))
        grads = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        directions = [q.direction for q in requests]
        if any(d is not None for d in directions):
            along = torch.stack(
                [
                    torch.zeros_like(q.point) if d is None else d
                    for q, d in zip(requests, directions, strict=True)
                ]
            )
            gtd = (grads * along).sum(1)
        else:
            gtd = torch.full_like(losses, math.nan)
        absolute = grads.abs()
        # The one read of this evaluation: each trial's decisions need these numbers.
        numbers = torch.stack([losses, distances, gtd, absolute.sum(1), absolute.amax(1)]).tolist()
        for i, trial in enumerate(asking):
            loss = numbers[0][i]
            gtd_i = numbers[2][i] if directions[i] is not None else math.nan
            # A copy of the row: a view would keep the whole stacked tensor alive as long as
            # this trial keeps its gradient.
            grad = grads[i].clone()
            here = Evaluation(loss, numbers[1][i], grad, gtd_i, numbers[3][i], numbers[4][i])
            # The first evaluation is the start itself (iteration 0); later ones belong to
            # the running outer step.
            iteration = self.done[trial] + 1 if self.evaluations[trial] else 0
            self.watch.see(trial, iteration, loss)
            self.evaluations[trial] += 1
            self.last[trial] = loss
            # L-BFGS can diverge to NaN late in a run: keep the best iterate, not the last.
            if loss < self.best_loss[trial]:
                self.best_loss[trial] = loss
                self.best_distance[trial] = here.distance
                self.best_point[trial] = requests[i].point
            self._advance(programs, pending, trial, here)

    def _best_images(self, trial: int) -> torch.Tensor:
        return self.best_point[trial][: self.image_size].reshape(1, *self.image_shape)

    def _record(self, trial: int, observer: Observer | None) -> None:
        self.logged[trial] = self.done[trial]
        # The best loss was read on the host already: its one-value tensors stay there.
        losses = torch.tensor([self.best_loss[trial]], device="cpu")
        distances = torch.tensor([self.best_distance[trial]], device="cpu")
        images = self._best_images(trial)
        record(self.rows, self.done[trial], losses, distances, images, observer, trial)

    def result(self, step: TrialStep, seconds: float, tolerance: float) -> TrialsResult:
        """Every trial's best iterate, judged; a final history row where one is missing."""
        k = len(self.starts)
        for trial in range(k):
            if self.logged[trial] == self.done[trial]:
                continue
            try:  # an observer that stopped the run is not called again
                self._record(trial, None if self.stopped else self.observer)
            except StopAttack:
                self.stopped = True
            except KeyboardInterrupt:
                self.interrupted = True
        images = torch.cat([self._best_images(trial) for trial in range(k)])
        if self.inputs.soft:
            soft = torch.stack([p[self.image_size :] for p in self.best_point])
            labels = hard_labels(soft.reshape(k, *self.label_shape))
        else:
            labels = self.inputs.labels
            labels = labels if self.inputs.labels_per_trial else labels.expand(k, -1)
        statuses = []
        for trial in range(k):
            best = self.best_point[trial]
            statuses.append(
                self.watch.verdict(
                    trial,
                    self.best_loss[trial],
                    moved=not torch.equal(best, self.starts[trial]),
                    finite=bool(torch.isfinite(best).all()),
                    tolerance=tolerance,
                )
            )
        return TrialsResult(
            images,
            labels.clone(),
            torch.tensor(self.best_loss, device="cpu"),
            self.rows,
            max(self.done),
            sum(self.evaluations),
            self.interrupted,
            self.stopped,
            trial_iterations=list(self.done),
            trial_evaluations=list(self.evaluations),
            compile_seconds=step.compile_seconds,
            step_calls=step.calls,
            compiled=step.compiled,
            seconds=seconds,
            distances=torch.tensor(self.best_distance, device="cpu"),
            statuses=statuses,
        )
