"""Estimate the memory K stacked trials need before allocating them; split a stack that does
not fit into groups that do, and join the groups' results as one stack's."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path

import torch
from torch.autograd.graph import saved_tensors_hooks

from gradleak.attacks.engine.step import Notice, TrialInputs, print_notice
from gradleak.attacks.engine.trials import TrialsResult
from gradleak.attacks.matching.problem import MatchingProblem
from gradleak.core.errors import GradleakError

# Besides the tensors the graph saves, a batched step holds per-trial copies of every
# parameter-sized tensor: the candidate gradient, its square and product with the target,
# and their gradients in the backward pass.
PARAMETER_COPIES = 4
# Measured growth of a batched step stays within 1.15× the saved-tensor count (resnet20,
# K = 16 and 64; lenet, K = 64; see docs/PERFORMANCE.md); the rest is margin for
# allocator slack.
SAFETY = 1.5
GIB = 1024**3
# Copies of each trial's inputs held while stacks run in groups: its start and its result.
INPUT_COPIES = 2


def step_bytes(problem: MatchingProblem, images: torch.Tensor, inputs: TrialInputs) -> int:
    """Bytes one trial's step keeps alive: its saved tensors plus parameter-sized copies."""
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    labels, target, tv = inputs.trial(0)
    with saved_tensors_hooks(pack, lambda tensor: tensor):
        problem.value_and_grad(images[0], labels, target, tv, soft=inputs.soft)
    parameter_bytes = sum(p.numel() * p.element_size() for p in problem.params.values())
    return sum(storages.values()) + PARAMETER_COPIES * parameter_bytes


def available_bytes(device: torch.device) -> int | None:
    """Free memory on `device` (None when the platform does not say)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    meminfo = Path("/proc/meminfo")
    if device.type != "cpu" or not meminfo.is_file():
        return None
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return None


def ensure_trials_fit(
    problem: MatchingProblem, images: torch.Tensor, inputs: TrialInputs, trials: int
) -> int:
    """Raise a one-line error when `trials` stacked trials would not fit; return the estimate.

    One trial's step is run once with saved-tensor hooks to count the bytes its graph
    keeps, plus `PARAMETER_COPIES` parameter-sized copies; the estimate is that times
    `trials` times `SAFETY`, compared with the free memory of the inputs' device (the
    CPU's MemAvailable, or the GPU's free memory). Where the platform does not say how
    much is free nothing is refused.

    Args:
        problem: the matching problem the trials attack.
        images: the inputs of at least one trial, K×B×C×H×W (only trial 0 is run), on
            the device the trials will use.
        inputs: what differs between trials (labels, target, TV weight), as `trial_inputs`
            builds it.
        trials: how many trials would run at once (all K, Adam and L-BFGS alike).

    Returns:
        The estimated bytes the stacked trials need.

    Raises:
        GradleakError: when the estimate exceeds the free memory (the message says how
            many trials would fit).
    """
    needed = int(step_bytes(problem, images, inputs) * trials * SAFETY)
    free = available_bytes(images.device)
    if free is not None and needed > free:
        per_trial = needed / trials
        fit = int(free // per_trial)
        raise GradleakError(
            f"{trials} trials would need about {needed / GIB:.1f} GiB but "
            f"{free / GIB:.1f} GiB is free (about {fit} fit): use fewer restarts, a smaller "
            "batch or a smaller model"
        )
    return needed


def trial_groups(
    problem: MatchingProblem,
    images: torch.Tensor,
    inputs: TrialInputs,
    trials: int,
    *,
    extra_bytes: int = 0,
    multiple: int = 1,
    notice: Notice = print_notice,
) -> list[range]:
    """The groups of consecutive trials that fit in free memory, run one after another.

    The estimate is `ensure_trials_fit`'s, plus `extra_bytes` per trial (L-BFGS's curvature
    history). When all trials fit they are one group; otherwise they are split into the
    fewest groups of equal size (the last may be smaller) that fit, and `notice` is told so
    in one line. Where the platform does not say how much is free, all trials are one group.

    Args:
        problem: the matching problem the trials attack.
        images: the inputs of at least one trial, K×B×C×H×W (only trial 0 is run), on
            the device the trials will use.
        inputs: what differs between trials, as `trial_inputs` builds it.
        trials: how many trials would run at once.
        extra_bytes: memory per trial that the step does not hold (an optimiser's state).
        multiple: every group but the last holds a multiple of this many trials (trials
            that interact, such as a consistency group, stay together).
        notice: where the one line about a split goes (default: standard error).

    Returns:
        The groups, as ranges of trial indices covering 0..trials−1 in order.

    Raises:
        GradleakError: when not even one trial (or one `multiple`) fits, or when the
            inputs of all trials (`INPUT_COPIES` each) alone do not.
    """
    per_trial = (step_bytes(problem, images, inputs) + extra_bytes) * SAFETY
    free = available_bytes(images.device)
    if free is None:
        return [range(trials)]
    # Every trial's start and result stay in memory while the groups run.
    held = trials * INPUT_COPIES * _input_bytes(images, inputs)
    if held > free:
        raise GradleakError(
            f"{trials} trials would need about {held / GIB:.1f} GiB for their inputs alone but "
            f"{free / GIB:.1f} GiB is free: use fewer restarts"
        )
    free -= held
    if per_trial * trials <= free:
        return [range(trials)]
    fit = int(free // (per_trial * multiple)) * multiple
    if fit < min(multiple, trials):
        least = min(multiple, trials)
        what = "one trial" if least == 1 else f"{least} trials that run together"
        raise GradleakError(
            f"{what} would need about {per_trial * least / GIB:.1f} GiB but "
            f"{free / GIB:.1f} GiB is free: use a smaller batch or a smaller model"
        )
    count = math.ceil(trials / fit)
    size = math.ceil(math.ceil(trials / count) / multiple) * multiple
    groups = [range(start, min(start + size, trials)) for start in range(0, trials, size)]
    notice(
        f"{trials} trials do not fit in {free / GIB:.1f} GiB free; running them in "
        f"{len(groups)} groups of {size}"
    )
    return groups


def run_in_groups(
    groups: list[range],
    run: Callable[[range], TrialsResult],
    *,
    stop_when_stopped: bool = True,
) -> TrialsResult:
    """Run the groups one after another and join their results as one stack's.

    Each trial's result is the one it gets in one stack, up to float rounding: trials are
    independent. History rows keep their trial's index in the whole stack. Ctrl-C or an
    observer's `StopAttack` in a group ends the run: later groups do not run, and the
    result holds the trials that ran.

    Args:
        groups: consecutive ranges of trial indices (`trial_groups`).
        run: optimises the trials of one group and returns their result.
        stop_when_stopped: a group that an observer stopped ends the run (default True;
            False: only Ctrl-C does, for observers that stop their own trials only).

    Returns:
        The joined result.
    """
    if len(groups) == 1:
        return run(groups[0])
    parts: list[TrialsResult] = []
    for group in groups:
        try:
            part = run(group)
        except KeyboardInterrupt:
            if not parts:
                raise
            # Ctrl-C outside a group's optimisation (its set-up): the finished groups stand.
            parts[-1] = dataclasses.replace(parts[-1], interrupted=True)
            break
        for row in part.history:
            row["trial"] = int(row["trial"]) + group.start
        parts.append(part)
        if part.interrupted or (part.stopped and stop_when_stopped):
            break
    return TrialsResult(
        torch.cat([p.images for p in parts]),
        torch.cat([p.labels for p in parts]),
        torch.cat([p.losses for p in parts]),
        [row for p in parts for row in p.history],
        max(p.iterations for p in parts),
        sum(p.loss_evaluations for p in parts),
        any(p.interrupted for p in parts),
        any(p.stopped for p in parts),
        trial_iterations=[n for p in parts for n in p.trial_iterations],
        compile_seconds=sum(p.compile_seconds for p in parts),
        compiled=any(p.compiled for p in parts),
        seconds=sum(p.seconds for p in parts),
        distances=torch.cat([p.distances for p in parts]),
        statuses=[s for p in parts for s in p.statuses],
        compile_report=_joined_reports([p.compile_report for p in parts]),
        trial_evaluations=[n for p in parts for n in p.trial_evaluations],
        step_calls=sum(p.step_calls for p in parts),
    )


def _joined_reports(reports: list[dict[str, object]]) -> dict[str, object]:
    """The groups' compile reports as one: the first group's decision, cache counts summed."""
    joined = dict(reports[0]) if reports else {}
    for key in ("cache_hits", "cache_misses"):
        counts = [r.get(key) for r in reports]
        if counts and all(isinstance(c, int) for c in counts):
            joined[key] = sum(counts)  # type: ignore[arg-type]
    return joined


def _input_bytes(images: torch.Tensor, inputs: TrialInputs) -> int:
    """One trial's inputs (and soft labels): what it holds outside the step."""
    size = images[0].numel() * images.element_size()
    if inputs.soft:
        size += inputs.labels[0].numel() * inputs.labels.element_size()
    return size
