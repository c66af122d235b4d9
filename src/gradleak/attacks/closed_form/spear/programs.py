"""SPEAR's linear programmes over the rows r of Q⁻¹: realisable zero sets and row estimates."""

from __future__ import annotations

import numpy as np
import torch

# A zero set is realisable when its linear programme's margin exceeds this (true columns
# reach the programme's cap of 1 or close to it, mixtures end far below 0).
_REALIZABLE_SLACK = 0.0


def _widest_row(
    pre: torch.Tensor, zero: torch.Tensor, equalities: torch.Tensor
) -> tuple[float, torch.Tensor] | None:
    """The r with the widest margin t to the sign pattern that `zero` asks of Aᵀ r.

    Maximises t subject to aⱼᵀ r ≤ −t on the zero rows, aⱼᵀ r ≥ t on the others and
    equalities · r = e₁ (the first row is cᵀ, so rᵀ c = 1), with t ≤ 1 to keep it bounded.

    Returns:
        (t, r), or None when the solver fails.
    """
    # SciPy is imported here, not at start-up: commands that never run SPEAR do not load it.
    from scipy.optimize import linprog

    a = pre.T.cpu().numpy()
    sign = np.where(zero.cpu().numpy(), 1.0, -1.0)
    rows, k = a.shape
    eq = equalities.cpu().numpy()
    result = linprog(
        np.r_[np.zeros(k), -1.0],
        A_ub=np.hstack([sign[:, None] * a, np.ones((rows, 1))]),
        b_ub=np.zeros(rows),
        A_eq=np.hstack([eq, np.zeros((eq.shape[0], 1))]),
        b_eq=np.r_[1.0, np.zeros(eq.shape[0] - 1)],
        bounds=[(None, None)] * k + [(None, 1.0)],
        method="highs",
    )
    if result.status != 0:
        return None
    return float(result.x[-1]), torch.as_tensor(result.x[:k], dtype=pre.dtype, device=pre.device)


def pattern_is_realizable(pre: torch.Tensor, total: torch.Tensor, zero: torch.Tensor) -> bool:
    """Whether some input built from the batch could have exactly `zero` as its inactive set.

    With ∂L/∂W = L R and ∂L/∂b = L c, every recovered input is xᵀ = rᵀ R for a row rᵀ of
    Q⁻¹, and rᵀ c = 1 (since Q⁻¹ Q 1 = 1), so its pre-activations are W x + b = Aᵀ r with
    A = R Wᵀ + c bᵀ. A true column of ∂L/∂Z is zero exactly where Aᵀ r ≤ 0 for its own r;
    a mixture of columns (zero only where all of them are) has a zero set that no r
    realises. One linear programme decides it: the largest t with aⱼᵀ r ≤ −t on the zero
    rows, aⱼᵀ r ≥ t on the others (columns aⱼ of A normalised) and rᵀ c = 1; the pattern is
    realisable when t > 0.

    Args:
        pre: A with unit columns, k × rows (float64).
        total: c, ∂L/∂b in L's coordinates (k).
        zero: the candidate column's zero rows (bool, rows).

    Returns:
        True when the programme finds t > 0, or cannot decide (then the certificate does).
    """
    # Any r with rᵀ c = 1 is feasible and t ≤ 1 bounds the programme, so it has an optimum
    # in exact arithmetic; a solver failure leaves the decision to the certificate.
    widest = _widest_row(pre, zero, total[None])
    return widest is None or widest[0] > _REALIZABLE_SLACK


def estimate_row(
    pre: torch.Tensor, total: torch.Tensor, zero: torch.Tensor, others: torch.Tensor
) -> torch.Tensor | None:
    """A point deep inside the rows r of Q⁻¹ that fit one column (see `pattern_is_realizable`).

    Args:
        pre: A with unit columns, k × rows (float64).
        total: c, ∂L/∂b in L's coordinates (k).
        zero: the column's zero rows (bool, rows).
        others: the other known columns, k × n; r is orthogonal to them.

    Returns:
        The r with rᵀ c = 1, rᵀ others = 0 and the widest margin to the column's sign
        pattern, or None when the solver finds none.
    """
    widest = _widest_row(pre, zero, torch.cat([total[None], others.T]))
    return None if widest is None else widest[1]
