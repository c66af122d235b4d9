"""SPEAR's candidate directions q from L: null vectors of row subsets, their refinement, the
split of a mixture of columns and the line sweep of the completion.

Every function reads `basis`, the gradient's orthonormal factor L (rows × k, float64), and
returns unit directions in L's coordinates (k entries each); the search decides which to keep.
"""

from __future__ import annotations

import torch

# Directions drawn to split one mixture.
_SPLIT_TRIES = 16


def null_directions(basis: torch.Tensor, picked: torch.Tensor) -> torch.Tensor:
    """Unit null vectors of the (k−1)×k submatrices L[picked[n]], one QR for all.

    Args:
        basis: L, rows × k.
        picked: n × (k−1) row indices.

    Returns:
        n × k unit directions.
    """
    sub = basis[picked]  # n × (k−1) × k
    q_full, _ = torch.linalg.qr(sub.mT, mode="complete")
    return q_full[..., -1]


def refine(basis: torch.Tensor, q: torch.Tensor, steps: int, eps: float) -> torch.Tensor:
    """Pull each start towards the sparsest nearby column of G = L Q, then re-solve it exactly.

    Iteratively reweighted least squares towards a minimum of ‖L q‖₁ over unit q, weights
    1 / (|L q| / max|L q| + eps); the result is re-solved as the null vector of its k−1
    smallest rows, so a refined start ends as a sampled one whose rows were chosen well.

    Args:
        basis: L, rows × k.
        q: n × k unit starts.
        steps: reweighted least-squares steps, ≥ 1.
        eps: ε of the weights, > 0.

    Returns:
        n × k unit directions.
    """
    for _ in range(steps):
        values = (q @ basis.T).abs()
        values = values / values.amax(dim=1, keepdim=True)
        w = 1.0 / (values + eps)
        gram = torch.einsum("nr,ri,rj->nij", w, basis, basis)
        q = torch.linalg.eigh(gram).eigenvectors[..., 0]
    # Re-solve exactly on the B−1 smallest entries: the refined start ends as a sample.
    k = basis.shape[1]
    smallest = (q @ basis.T).abs().topk(k - 1, dim=1, largest=False).indices
    return null_directions(basis, smallest)


def split_mixture(
    basis: torch.Tensor, zero: torch.Tensor, zero_tol: float, generator: torch.Generator
) -> torch.Tensor | None:
    """Directions that pull a mixture of columns apart, or None for a single column.

    A mixture of d columns is zero on the rows where all of them are, and there L has
    a d-dimensional null space N (a single column leaves one dimension). Each of the d
    columns is zero on further rows: d−1 random rows outside the zero set pin a
    direction in N, the column itself whenever they are all among that column's zeros.
    L's singular values on a column's zero rows sit at the gradient's rounding
    (about 1e-8 of the largest), the next ones at 1e-3 or above; zero_tol tells them
    apart.

    Args:
        basis: L, rows × k.
        zero: the candidate's zero rows (bool, rows).
        zero_tol: singular values at most this count as zero.
        generator: draws the pinning rows.

    Returns:
        `_SPLIT_TRIES` × k directions, or None when `zero` leaves L one null direction.
    """
    _, values, vh = torch.linalg.svd(basis[zero], full_matrices=False)
    dims = int((values <= zero_tol).sum())
    outside = (~zero).nonzero().flatten()
    if dims < 2 or outside.numel() < dims - 1:
        return None
    null = vh[-dims:].T  # k × d
    # Drawn on the CPU generator, then moved: the same seed splits alike on any device.
    weights = torch.ones(_SPLIT_TRIES, outside.numel(), dtype=torch.float64)
    draws = torch.multinomial(weights, dims - 1, replacement=False, generator=generator)
    picked = outside[draws.to(outside.device)]
    sub = basis[picked] @ null  # tries × (d−1) × d
    return torch.linalg.qr(sub.mT, mode="complete").Q[..., -1] @ null.T


def sweep_zero_sets(
    basis: torch.Tensor,
    alpha: torch.Tensor,
    beta: torch.Tensor,
    left_out: torch.Tensor,
    *,
    zero_tol: float,
    min_zeros: int,
) -> list[torch.Tensor]:
    """The zero sets {α + t β ≤ 0} along the line t ∈ ℝ on which L has a null vector.

    Each row changes sign once, at t = −α/β; the Gram matrices Lₛᵀ Lₛ of all stretches
    follow from one cumulative sum of rank-one updates, and a stretch is a hit when the
    smallest eigenvalue is at most zero_tol² (the squared size of a zero entry).

    Args:
        basis: L, rows × k.
        alpha: the rows' pre-activations at t = 0.
        beta: their slopes along the line.
        left_out: rows not tested (bool, rows).
        zero_tol: the size of a zero entry of a unit column.
        min_zeros: the fewest zero rows a hit may have.

    Returns:
        The hits' zero sets (bool, rows each), in the order of t.
    """
    moving = ~left_out & (beta != 0)
    inside = (~left_out & (beta == 0) & (alpha <= 0)) | (moving & (beta > 0))
    rows = moving.nonzero().flatten()
    rows = rows[(-alpha[rows] / beta[rows]).argsort()]
    step = torch.where(beta[rows] > 0, -1.0, 1.0).to(alpha.dtype)  # leaves or enters
    ell = basis[rows]
    first = basis[inside].T @ basis[inside]
    updates = (step[:, None, None] * ell[:, :, None] * ell[:, None, :]).cumsum(dim=0)
    grams = torch.cat([first[None], first + updates])
    counts = int(inside.sum()) + torch.cat([step.new_zeros(1), step.cumsum(dim=0)])
    smallest = torch.linalg.eigvalsh(grams)[:, 0]
    hits = (smallest <= zero_tol**2) & (counts >= min_zeros)
    zeros = []
    for stretch in hits.nonzero().flatten().tolist():
        zero = inside.clone()
        zero[rows[:stretch]] = ~zero[rows[:stretch]]
        zeros.append(zero)
    return zeros


def null_vector(basis: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """The unit q minimising ‖L q‖ on the rows of `zero`."""
    return torch.linalg.svd(basis[zero], full_matrices=False).Vh[-1]


def polish(basis: torch.Tensor, direction: torch.Tensor, zero_tol: float) -> torch.Tensor:
    """Re-solve `direction` on its own zero rows (they may differ from the sweep's by a
    row whose pre-activation is near zero); unchanged when it has fewer than k−1."""
    values = (basis @ direction).abs()
    zero = values <= zero_tol * values.max()
    if int(zero.sum()) < basis.shape[1] - 1:
        return direction
    return null_vector(basis, zero)
