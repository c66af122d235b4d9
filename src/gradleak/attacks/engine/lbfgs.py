"""L-BFGS trials, one after another, each with its own curvature history and line search."""

from __future__ import annotations

import math
import time

import torch

from gradleak.attacks.engine.hooks import Observer, StopAttack
from gradleak.attacks.engine.status import TrialWatch
from gradleak.attacks.engine.step import Notice, TrialInputs, TrialStep, print_notice
from gradleak.attacks.engine.trials import (
    TrialsResult,
    hard_labels,
    on_device,
    progress_bar,
    record,
)
from gradleak.attacks.matching.problem import MatchingProblem

# An L-BFGS trial has converged when its best loss has not improved for this many steps.
LBFGS_PATIENCE = 10


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
    number of evaluations per step (see docs/PERFORMANCE.md). They run where the problem's
    replica is: the starts and labels are moved there once.

    Each trial runs torch.optim.LBFGS (history size 100) on its inputs, and on its soft
    labels when they are soft, for up to `steps` outer steps. It keeps the best iterate
    seen (L-BFGS can diverge to NaN late in a run) and ends early when its best loss is at
    most `tolerance`, when its last loss is not finite, or when its best loss has not
    improved for `LBFGS_PATIENCE` outer steps. Each trial is judged from every loss it
    evaluated (`gradleak.attacks.engine.status`); a trial that diverged returns its start,
    which is then its best iterate. Ctrl-C or an observer's `StopAttack` ends the running
    trial and skips the rest.

    Args:
        problem: the matching problem (shared update, replay, objective, prior); every
            trial matches `problem.target` with `problem.tv_weight`.
        images: the trials' starting inputs K×B×C×H×W, normalised space (not modified).
        labels: B integer labels shared by all trials, K×B integer labels (one row per
            trial), or K×B×classes soft labels (logits, one set per trial, optimised with
            the inputs).
        lr: torch's L-BFGS `lr` (default 1).
        steps: outer steps per trial, each one `optimizer.step` (default 300).
        inner_iterations: torch's `max_iter`, L-BFGS iterations per outer step
            (default 20).
        line_search: None (default; a fixed step) or "strong_wolfe".
        tolerance: end a trial once its best loss is at most this (default 0).
        log_every: outer steps between history rows and observer calls (default 10).
        observer: the engine's callback hook (`gradleak.attacks.engine.hooks`), given
            the distance at one trial's best iterate and that iterate; None: nothing
            watches.
        progress: show a progress bar per trial on a terminal (default True).
        compile: torch.compile the step (falls back in one line when it cannot).
        notice: where that one line goes (default: standard error).

    Returns:
        The trials that ran: each one's best inputs, labels (K×B integers; the argmax of
        optimised soft labels), best loss and the distance there, verdict, history rows
        (`trial` names the trial), outer steps and loss evaluations.
    """
    per_trial_labels = labels.dim() > 1  # K×B integers or K×B×classes soft labels
    images, labels = on_device(problem, images, labels)
    step = TrialStep(problem, compile=compile, notice=notice)
    watch = TrialWatch(images.shape[0])
    results = []
    start = time.perf_counter()
    for trial in range(images.shape[0]):
        result = _lbfgs_trial(
            problem,
            images[trial],
            labels[trial] if per_trial_labels else labels,
            trial=trial,
            watch=watch,
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
        distances=torch.cat([r.distances for r in results]),
        statuses=[status for r in results for status in r.statuses],
    )


def _lbfgs_trial(
    problem: MatchingProblem,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    trial: int,
    watch: TrialWatch,
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
    best = {
        "loss": math.inf,
        "distance": math.nan,
        "x": x.detach().clone(),
        "labels": label_param.detach().clone(),
    }
    tv_weight = torch.tensor([problem.tv_weight], dtype=x.dtype, device=x.device)
    evaluations = 0
    last = math.inf
    done = 0  # outer steps completed; the running one is done + 1

    def closure() -> torch.Tensor:
        nonlocal evaluations, last
        inputs = TrialInputs(
            label_param.detach().unsqueeze(0) if soft else label_param.detach(),
            problem.target,
            tv_weight,
            labels_per_trial=soft,
            target_per_trial=False,
        )
        grad_x, grad_labels, values, distances = step(x.detach().unsqueeze(0), inputs)
        x.grad = grad_x[0]
        if soft:
            label_param.grad = grad_labels[0]
        value = values[0]
        # The first evaluation is the start itself (iteration 0); later ones belong to the
        # running outer step.
        watch.see(trial, done + 1 if evaluations else 0, float(value))
        evaluations += 1
        last = float(value)
        # L-BFGS can diverge to NaN late in a run; keep the best iterate seen, not the last.
        if last < best["loss"]:
            best.update(
                loss=last,
                distance=float(distances[0]),
                x=x.detach().clone(),
                labels=label_param.detach().clone(),
            )
        return value

    history: list[dict[str, float | int | None]] = []
    interrupted = stopped = False
    bar = progress_bar(steps, progress, f"L-BFGS trial {trial}")
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
                _record(history, done, best, observer, trial)
            if converged or best["loss"] <= tolerance or not math.isfinite(last):
                break
    except StopAttack:
        stopped = True
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    if not history or history[-1]["iteration"] != done:
        try:  # an observer that stopped the run is not called again
            _record(history, done, best, None if stopped else observer, trial)
        except StopAttack:
            stopped = True
        except KeyboardInterrupt:
            interrupted = True
    start = images.detach()
    moved = not torch.equal(best["x"], start) or (soft and not torch.equal(best["labels"], labels))
    finite = bool(torch.isfinite(best["x"]).all()) and bool(torch.isfinite(best["labels"]).all())
    status = watch.verdict(trial, best["loss"], moved=moved, finite=finite, tolerance=tolerance)
    return TrialsResult(
        best["x"].unsqueeze(0),
        hard_labels(best["labels"]).unsqueeze(0),
        torch.tensor([best["loss"]], device="cpu"),
        history,
        done,
        evaluations,
        interrupted,
        stopped,
        distances=torch.tensor([best["distance"]], device="cpu"),
        statuses=[status],
    )


def _record(
    history: list[dict[str, float | int | None]],
    iteration: int,
    best: dict,
    observer: Observer | None,
    trial: int,
) -> None:
    """One history row for the running trial's best iterate."""
    # The best loss was read on the host already: its one-value tensors stay there.
    losses = torch.tensor([best["loss"]], device="cpu")
    distances = torch.tensor([best["distance"]], device="cpu")
    record(history, iteration, losses, distances, best["x"].unsqueeze(0), observer, trial)
