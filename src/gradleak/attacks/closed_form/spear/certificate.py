"""SPEAR's certificate: a recovered input is right when ReLU's inactive units are its zeros."""

from __future__ import annotations

import torch


def certify(
    features: torch.Tensor,
    columns: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    *,
    zero_tol: float,
    margin: float,
) -> tuple[list[bool], list[int]]:
    """Check each input against its gradient column: ReLU's inactive units are its zeros.

    Args:
        features: candidate inputs, k × in_features (float64).
        columns: their ∂L/∂Z columns on the checked rows, rows × k.
        weight: the layer's weight on the same rows, rows × in_features.
        bias: the layer's bias on the same rows.
        zero_tol: a column entry is zero when |entry| ≤ zero_tol · max|column|.
        margin: rows with |W x + b| ≤ margin · max|W x + b| are not checked.

    Returns:
        (certified, mismatches): per input, whether every checked row agrees, and how
        many checked rows disagree.
    """
    pre = features @ weight.T + bias  # k × rows
    scale = columns.abs().amax(dim=0).clamp_min(torch.finfo(columns.dtype).tiny)
    zero = columns.abs() <= zero_tol * scale  # rows × k
    inactive = (pre <= 0).T
    checked = (pre.abs() > margin * pre.abs().amax(dim=1, keepdim=True)).T
    disagree = ((zero != inactive) & checked).sum(dim=0)
    finite = torch.isfinite(features).all(dim=1) & torch.isfinite(columns).all(dim=0)
    # A zero column is no sample's gradient: its zeros would match any pattern of z ≤ 0.
    alive = ~zero.all(dim=0)
    ok = (disagree == 0) & finite & alive
    return ok.tolist(), [int(d) for d in disagree]
