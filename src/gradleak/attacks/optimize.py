"""The gradient-matching engine: K independent trials optimised at once.

Adam trials are stacked on a leading trial axis and evaluated with one `vmap` of the
functional matching loss, so restarts cost one batched forward/backward instead of K.
Adam is element-wise, so stacking does not couple the trials. L-BFGS is not: its line
search and curvature pairs act on the whole parameter vector, so stacked trials would
share step sizes. L-BFGS trials therefore run one after another.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch.func import vmap
from tqdm.auto import tqdm

from gradleak.attacks.batched_adam import BatchedAdam
from gradleak.attacks.matching import MatchingProblem
from gradleak.attacks.memory import ensure_trials_fit
from gradleak.attacks.trial_step import Notice, TrialInputs, TrialStep, print_notice

# An L-BFGS trial has converged when its best loss has not improved for this many steps.
LBFGS_PATIENCE = 10

# Called every `log_every` iterations with (iteration, per-trial loss, per-trial images);
# may return extra columns for the history (the evaluation side adds PSNR this way).
Observer = Callable[[int, torch.Tensor, torch.Tensor], "Mapping[str, float] | None"]


class StopAttack(Exception):  # noqa: N818 - a signal, not an error
    """Raised by an observer to end the attack early (e.g. a target PSNR was reached)."""


def best_trial(losses: torch.Tensor) -> int:
    """Index of the lowest finite loss (a diverged trial never wins)."""
    return int(torch.where(torch.isfinite(losses), losses, torch.inf).argmin())


@dataclass
class TrialsResult:
    """Final state of every trial: images K×B×C×H×W, labels K×B, matching loss K."""

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

    @property
    def best(self) -> int:
        return best_trial(self.losses)


def _labels_out(labels: torch.Tensor) -> torch.Tensor:
    return labels if labels.dtype == torch.long else labels.argmax(dim=-1)


def _progress(total: int, enabled: bool, desc: str) -> tqdm:
    # `delay` keeps short runs quiet: the bar appears only after two seconds.
    return tqdm(
        total=total,
        desc=desc,
        delay=2.0,
        mininterval=0.5,
        disable=None if enabled else True,  # None: only on a terminal
        leave=False,
    )


def _record(
    history: list[dict[str, float | int | None]],
    iteration: int,
    losses: torch.Tensor,
    images: torch.Tensor,
    observer: Observer | None,
    trial: int | None = None,
) -> float:
    best = best_trial(losses)
    loss = float(losses[best])
    row: dict[str, float | int | None] = {
        "iteration": iteration,
        "trial": best if trial is None else trial,
        "loss": loss,
    }
    if observer is not None:
        row.update(observer(iteration, losses.detach(), images.detach()) or {})
    history.append(row)
    return loss


def _clamp(x: torch.Tensor, bounds: tuple[torch.Tensor, torch.Tensor] | None) -> None:
    """Project stacked images onto the per-channel pixel box, in place."""
    if bounds is not None:
        with torch.no_grad():
            x.clamp_(min=bounds[0], max=bounds[1])


def _per_trial(value: float | Sequence[float], k: int, name: str) -> list[float]:
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
    return TrialInputs(
        labels=labels.detach(),
        target=problem.target if targets is None else {n: targets[n] for n in problem.names},
        tv_weight=torch.tensor(
            _per_trial(tv, k, "tv_weights"), dtype=images.dtype, device=images.device
        ),
        labels_per_trial=labels.dim() > 1,
        target_per_trial=targets is not None,
    )


def score_trials(
    problem: MatchingProblem, images: torch.Tensor, inputs: TrialInputs
) -> torch.Tensor:
    """The matching loss of every trial (no gradient with respect to the images)."""
    axes = (0, 0 if inputs.labels_per_trial else None, 0 if inputs.target_per_trial else None, 0)
    with torch.no_grad():
        return vmap(problem.loss, in_dims=axes)(
            images, inputs.labels, inputs.target, inputs.tv_weight
        )


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
) -> TrialsResult:
    """Adam on K stacked trials (`images` is K×B×C×H×W), all in one computation.

    Each trial may have its own step size (`lr`), iteration budget and decay schedule
    (`iterations`), TV weight (`tv_weights`), target update (`targets`, K× each tensor:
    independent images) and labels: `labels` is B integers shared by all trials, K×B
    integers, or K×B×classes soft labels that are optimised too. A trial stops early when
    its loss is at most `tolerance` or not finite (checked every `log_every` iterations,
    so the hot loop never waits for the device); stopped trials cost nothing more.
    """
    k = images.shape[0]
    inputs = trial_inputs(images, labels, problem, targets, tv_weights)
    budgets = [int(n) for n in _per_trial(iterations, k, "iterations")]
    step = TrialStep(problem, compile=compile, notice=notice)
    if check_memory:
        ensure_trials_fit(problem, images, inputs, k)
    x = images.detach().clone()
    soft_labels = inputs.labels.clone() if inputs.soft else None
    rates = _per_trial(lr, k, "lr")
    adam = BatchedAdam(x, rates, budgets, lr_decay=lr_decay)
    label_adam = None
    if soft_labels is not None:
        label_adam = BatchedAdam(soft_labels, rates, budgets, lr_decay=lr_decay)
    active = [i for i in range(k) if budgets[i] > 0]
    latest = torch.full((k,), torch.nan, dtype=x.dtype, device=x.device)
    evaluations = k  # the final scoring of every trial
    history: list[dict[str, float | int | None]] = []
    total = max(budgets)
    done = 0
    interrupted = stopped = False
    run_start = time.perf_counter()
    bar = _progress(total, progress, "matching")
    try:
        for iteration in range(total):
            active = [i for i in active if adam.steps[i] < budgets[i]]
            if not active:
                break
            current = inputs if soft_labels is None else _with_labels(inputs, soft_labels)
            grad_x, grad_labels, losses = _step_rows(step, x, current, active)
            evaluations += k if step.compile else len(active)
            if len(active) == k:
                latest.copy_(losses.detach())
            else:
                latest[torch.tensor(active, device=x.device)] = losses.detach()
            if iteration % log_every == 0:
                loss = _record(history, iteration, latest, x, observer)
                bar.set_postfix(loss=f"{loss:.4g}")
                running = _still_running(active, latest, tolerance)
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
    final_inputs = inputs if soft_labels is None else _with_labels(inputs, soft_labels)
    try:
        final = score_trials(problem, x, final_inputs)
        _record(history, done, final, x, observer)
    except StopAttack:
        stopped = True
    except KeyboardInterrupt:
        # Interrupted while scoring: keep the images, rank trials as unknown.
        interrupted = True
        final = torch.full((k,), torch.nan)
    out_labels = _labels_out(final_inputs.labels)
    if not inputs.labels_per_trial:
        out_labels = out_labels.expand(k, -1)
    return TrialsResult(
        x,
        out_labels.clone(),
        final,
        history,
        done,
        evaluations,
        interrupted,
        stopped,
        trial_iterations=list(adam.steps),
        compile_seconds=step.compile_seconds,
        compiled=step.compiled,
        seconds=seconds,
    )


def _step_rows(step: TrialStep, x: torch.Tensor, inputs: TrialInputs, active: list[int]):
    """The step's outputs for the running trials only."""
    if len(active) == x.shape[0]:
        return step(x, inputs)
    rows = torch.tensor(active, device=x.device)
    if not step.compile:
        return step(x[rows], inputs.select(rows))
    # A compiled step keeps its input shape (no recompiling): compute all, keep the rows.
    grad_x, grad_labels, losses = step(x, inputs)
    return grad_x[rows], None if grad_labels is None else grad_labels[rows], losses[rows]


def _with_labels(inputs: TrialInputs, labels: torch.Tensor) -> TrialInputs:
    return TrialInputs(
        labels, inputs.target, inputs.tv_weight, inputs.labels_per_trial, inputs.target_per_trial
    )


def _still_running(active: list[int], latest: torch.Tensor, tolerance: float) -> list[int]:
    """Drop trials that reached `tolerance` or diverged (one device sync, at a check only)."""
    values = latest.tolist()
    return [i for i in active if math.isfinite(values[i]) and values[i] > tolerance]


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
    compile: bool = False,
    notice: Notice = print_notice,
) -> TrialsResult:
    """L-BFGS trials one after another; `labels` is B (integer) or K×B×classes (soft).

    Trials are not stacked: L-BFGS's line search, curvature history and convergence tests
    read the loss on the host after every evaluation, and each trial needs a different
    number of evaluations per step (see docs/PERFORMANCE.md).
    """
    soft = labels.dtype != torch.long
    step = TrialStep(problem, compile=compile, notice=notice)
    results = []
    start = time.perf_counter()
    for trial in range(images.shape[0]):
        trial_labels = labels[trial] if soft else labels
        result = _lbfgs_trial(
            problem,
            images[trial],
            trial_labels,
            trial=trial,
            step=step,
            lr=lr,
            steps=steps,
            inner_iterations=inner_iterations,
            line_search=line_search,
            tolerance=tolerance,
            log_every=log_every,
            observer=observer,
            progress=progress,
        )
        results.append(result)
        if result.interrupted or result.stopped:  # the remaining trials do not run
            break
    return TrialsResult(
        torch.cat([r.images for r in results]),
        torch.cat([r.labels for r in results]),
        torch.cat([r.losses for r in results]),
        [row for r in results for row in r.history],
        max(r.iterations for r in results),
        sum(r.loss_evaluations for r in results),
        any(r.interrupted for r in results),
        any(r.stopped for r in results),
        trial_iterations=[r.iterations for r in results],
        compile_seconds=step.compile_seconds,
        compiled=step.compiled,
        seconds=time.perf_counter() - start,
    )


def _lbfgs_trial(
    problem: MatchingProblem,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    trial: int,
    step: TrialStep,
    lr: float,
    steps: int,
    inner_iterations: int,
    line_search: str | None,
    tolerance: float,
    log_every: int,
    observer: Observer | None,
    progress: bool,
) -> TrialsResult:
    soft = labels.dtype != torch.long
    x = images.detach().clone().requires_grad_(True)
    label_param = labels.detach().clone().requires_grad_(soft)
    params = [x, label_param] if soft else [x]
    optimizer = torch.optim.LBFGS(
        params, lr=lr, max_iter=inner_iterations, history_size=100, line_search_fn=line_search
    )
    best = {"loss": math.inf, "x": x.detach().clone(), "labels": label_param.detach().clone()}
    tv_weight = torch.tensor([problem.tv_weight], dtype=x.dtype, device=x.device)
    evaluations = 0
    last = math.inf

    def closure() -> torch.Tensor:
        nonlocal evaluations, last
        inputs = TrialInputs(
            label_param.detach().unsqueeze(0) if soft else label_param.detach(),
            problem.target,
            tv_weight,
            labels_per_trial=soft,
            target_per_trial=False,
        )
        grad_x, grad_labels, values = step(x.detach().unsqueeze(0), inputs)
        x.grad = grad_x[0]
        if soft:
            label_param.grad = grad_labels[0]
        value = values[0]
        evaluations += 1
        last = float(value)
        # L-BFGS can diverge to NaN late in a run; keep the best iterate seen, not the last.
        if last < best["loss"]:
            best.update(loss=last, x=x.detach().clone(), labels=label_param.detach().clone())
        return value

    history: list[dict[str, float | int | None]] = []
    done = 0
    interrupted = stopped = False
    bar = _progress(steps, progress, f"L-BFGS trial {trial}")
    try:
        stalled = 0
        for outer in range(steps):
            before = best["loss"]
            optimizer.step(closure)
            done = outer + 1
            # Converged: no better iterate for LBFGS_PATIENCE steps.
            stalled = stalled + 1 if best["loss"] >= before else 0
            converged = stalled >= LBFGS_PATIENCE
            bar.update(1)
            if done % log_every == 0:
                bar.set_postfix(loss=f"{best['loss']:.4g}")
                _record(
                    history,
                    done,
                    torch.tensor([best["loss"]]),
                    best["x"].unsqueeze(0),
                    observer,
                    trial,
                )
            if converged or best["loss"] <= tolerance or not math.isfinite(last):
                break
    except StopAttack:
        stopped = True
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    losses = torch.tensor([best["loss"]])
    if not history or history[-1]["iteration"] != done:
        try:
            _record(history, done, losses, best["x"].unsqueeze(0), observer, trial)
        except StopAttack:
            stopped = True
        except KeyboardInterrupt:
            interrupted = True
    return TrialsResult(
        best["x"].unsqueeze(0),
        _labels_out(best["labels"]).unsqueeze(0) if soft else best["labels"].unsqueeze(0),
        losses,
        history,
        done,
        evaluations,
        interrupted,
        stopped,
    )
