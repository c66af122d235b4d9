"""Optimal one-to-one assignment of reconstructions to ground-truth images."""

from __future__ import annotations

import torch
from torch import Tensor

from gradleak.metrics._checks import image_pair


def pairwise_mse(recon: Tensor, truth: Tensor) -> Tensor:
    """Matrix of MSEs, entry [i, j] = MSE(truth[i], recon[j]), on clamped [0, 1] images.

    Args:
        recon: reconstructed images B×C×H×W, floating point, values in [0, 1] (others are
            clamped).
        truth: ground-truth images of the same shape.

    Returns:
        float64 tensor of shape [B, B]: row i holds the MSE of truth[i] against every
        reconstruction.

    Raises:
        GradleakError: when `recon` or `truth` is not a B×C×H×W floating-point torch.Tensor.
        GradleakError: when `recon` or `truth` is empty or contains NaN.
        GradleakError: when `recon` and `truth` differ in shape.
    """
    recon64, truth64 = image_pair(recon, truth, "reconstruction", "ground truth")
    flat_recon = recon64.flatten(1)
    # One row at a time: the full B×B×D difference tensor would not fit for large images.
    rows = [(flat_recon - t).pow(2).mean(dim=1) for t in truth64.flatten(1)]
    return torch.stack(rows)


def match_reconstructions(recon: Tensor, truth: Tensor) -> Tensor:
    """Return order (int64[B]) so that recon[order[i]] is the reconstruction of truth[i].

    The assignment is one-to-one and minimises the total per-pair MSE (Hungarian method).

    Args:
        recon: reconstructed images B×C×H×W, floating point, values in [0, 1] (others are
            clamped), in any order.
        truth: ground-truth images of the same shape.

    Returns:
        int64 tensor of shape [B], a permutation of 0..B-1: order[i] is the index of the
        reconstruction assigned to truth[i].

    Raises:
        GradleakError: when `recon` or `truth` is not a B×C×H×W floating-point torch.Tensor.
        GradleakError: when `recon` or `truth` is empty or contains NaN.
        GradleakError: when `recon` and `truth` differ in shape.
    """
    cost = pairwise_mse(recon, truth)  # on the CPU: the assignment is solved there
    if cost.shape[0] == 1:
        return torch.zeros(1, dtype=torch.int64, device=cost.device)
    from scipy.optimize import linear_sum_assignment  # heavy: only batches need it

    truth_idx, recon_idx = linear_sum_assignment(cost.numpy())
    order = torch.empty(cost.shape[0], dtype=torch.int64, device=cost.device)
    order[torch.from_numpy(truth_idx).long()] = torch.from_numpy(recon_idx).long()
    return order
