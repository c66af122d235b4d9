"""Estimate the memory K stacked trials need before allocating them."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.autograd.graph import saved_tensors_hooks

from gradleak.attacks.engine.step import TrialInputs
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
        trials: how many trials would run at once (Adam: all K; L-BFGS: 1).

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
