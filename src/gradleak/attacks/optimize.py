"""The gradient-matching engine: K independent trials optimised at once.

Adam trials are stacked on a leading trial axis and evaluated with one `vmap` of the
functional matching loss, so restarts cost one batched forward/backward instead of K.
Adam is element-wise, so stacking does not couple the trials. L-BFGS is not: its line
search and curvature pairs act on the whole parameter vector, so stacked trials would
share step sizes. L-BFGS trials therefore run one after another.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch.func import grad_and_value, vmap
from tqdm.auto import tqdm

from gradleak.attacks.matching import MatchingProblem

# An L-BFGS trial has converged when its best loss has not improved for this many steps.
LBFGS_PATIENCE = 10

# Called every `log_every` iterations with (iteration, per-trial loss, per-trial images);
# may return extra columns for the history (the evaluation side adds PSNR this way).
Observer = Callable[[int, torch.Tensor, torch.Tensor], "Mapping[str, float] | None"]


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
            x.data = torch.maximum(torch.minimum(x, bounds[1]), bounds[0])


def _trial_step(problem: MatchingProblem, soft: bool, trials: int) -> Callable:
    """grad_and_value of the loss over stacked trials.

    One trial skips vmap: a vmapped double backward costs about three single ones on the
    CPU, while from about eight trials on the vmapped cost per trial matches a single one.
    """
    value_and_grad = grad_and_value(problem.loss, argnums=(0, 1) if soft else 0)
    if trials > 1:
        return vmap(value_and_grad, in_dims=(0, 0 if soft else None))

    def single(images: torch.Tensor, labels: torch.Tensor):
        grads, value = value_and_grad(images[0], labels[0] if soft else labels)
        stacked = tuple(g.unsqueeze(0) for g in grads) if soft else grads.unsqueeze(0)
        return stacked, value.unsqueeze(0)

    return single


def optimize_adam(
    problem: MatchingProblem,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    lr: float,
    iterations: int,
    signed: bool = True,
    bounds: tuple[torch.Tensor, torch.Tensor] | None = None,
    lr_decay: bool = True,
    log_every: int = 100,
    observer: Observer | None = None,
    progress: bool = True,
) -> TrialsResult:
    """Adam on K stacked trials; `labels` is B (shared, integer) or K×B×classes (soft)."""
    soft = labels.dtype != torch.long
    x = images.detach().clone().requires_grad_(True)
    label_param = labels.detach().clone().requires_grad_(soft)
    params = [x, label_param] if soft else [x]
    step = _trial_step(problem, soft, x.shape[0])
    optimizer = torch.optim.Adam(params, lr=lr)
    # Inverting Gradients divides the step size by 10 at 3/8, 5/8 and 7/8 of the run.
    milestones = [int(iterations * f) for f in (3 / 8, 5 / 8, 7 / 8)] if lr_decay else []
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=0.1)
    history: list[dict[str, float | int | None]] = []
    done = 0
    interrupted = False
    bar = _progress(iterations, progress, "matching")
    try:
        for iteration in range(iterations):
            grads, losses = step(x.detach(), label_param.detach())
            grad_x = grads[0] if soft else grads
            x.grad = grad_x.sign() if signed else grad_x
            if soft:
                label_param.grad = grads[1]
            if iteration % log_every == 0:
                loss = _record(history, iteration, losses, x, observer)
                bar.set_postfix(loss=f"{loss:.4g}")
            optimizer.step()
            scheduler.step()
            _clamp(x, bounds)
            done = iteration + 1
            bar.update(1)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    _clamp(x, bounds)  # again: an interrupt may land between the step and the clamp
    try:
        with torch.no_grad():
            final = vmap(problem.loss, in_dims=(0, 0 if soft else None))(x.detach(), label_param)
        _record(history, done, final, x, observer)
    except KeyboardInterrupt:
        # Interrupted while scoring: keep the images, rank trials as unknown.
        interrupted = True
        final = torch.full((x.shape[0],), torch.nan)
    k = x.shape[0]
    out_labels = _labels_out(label_param.detach())
    if not soft:
        out_labels = out_labels.expand(k, -1)
    return TrialsResult(
        x.detach(), out_labels.clone(), final, history, done, done * k + k, interrupted
    )


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
) -> TrialsResult:
    """L-BFGS trials one after another; `labels` is B (integer) or K×B×classes (soft)."""
    soft = labels.dtype != torch.long
    results = []
    interrupted = False
    for trial in range(images.shape[0]):
        trial_labels = labels[trial] if soft else labels
        result = _lbfgs_trial(
            problem,
            images[trial],
            trial_labels,
            trial=trial,
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
        if result.interrupted:
            interrupted = True
            break
    return TrialsResult(
        torch.cat([r.images for r in results]),
        torch.cat([r.labels for r in results]),
        torch.cat([r.losses for r in results]),
        [row for r in results for row in r.history],
        max(r.iterations for r in results),
        sum(r.loss_evaluations for r in results),
        interrupted,
    )


def _lbfgs_trial(
    problem: MatchingProblem,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    trial: int,
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
    value_and_grad = grad_and_value(problem.loss, argnums=(0, 1) if soft else 0)
    optimizer = torch.optim.LBFGS(
        params, lr=lr, max_iter=inner_iterations, history_size=100, line_search_fn=line_search
    )
    best = {"loss": math.inf, "x": x.detach().clone(), "labels": label_param.detach().clone()}
    evaluations = 0
    last = math.inf

    def closure() -> torch.Tensor:
        nonlocal evaluations, last
        grads, value = value_and_grad(x.detach(), label_param.detach())
        if soft:
            x.grad, label_param.grad = grads
        else:
            x.grad = grads
        evaluations += 1
        last = float(value)
        # L-BFGS can diverge to NaN late in a run; keep the best iterate seen, not the last.
        if last < best["loss"]:
            best.update(loss=last, x=x.detach().clone(), labels=label_param.detach().clone())
        return value

    history: list[dict[str, float | int | None]] = []
    done = 0
    interrupted = False
    bar = _progress(steps, progress, f"L-BFGS trial {trial}")
    try:
        stalled = 0
        for step in range(steps):
            before = best["loss"]
            optimizer.step(closure)
            done = step + 1
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
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    losses = torch.tensor([best["loss"]])
    if not history or history[-1]["iteration"] != done:
        try:
            _record(history, done, losses, best["x"].unsqueeze(0), observer, trial)
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
    )
