"""The span of a linear layer's inputs, read from its weight gradients.

For a layer y = x Wᵀ + b applied to the vectors x_t of a batch, ∂L/∂W = Σ_t δ_t x_tᵀ: every
row of the weight gradient is a combination of the inputs, so the gradient's row space is
the span of the x_t whose back-propagated δ_t are not zero (all of them in practice) as
long as there are fewer of them than the input dimension H. A vector lies in that span
exactly when it is one of the inputs or a combination of them, which is what the text
attacks test candidates against (DAGER, Petrov et al. 2024).

Numerical rank. Gradients arrive in float32, whose rounding fills the directions outside the
span with singular values near 1e-8 of the largest; the inputs' own directions sit at 1e-5
and above in the models measured (MiniLM-L6 and a random 2-layer BERT, batches of 1 to 8
sentences). A singular value counts when it exceeds `rank_tolerance` (default 1e-6) times
the largest, so a float32 update keeps every input direction and drops the rounding.

Several matrices (e.g. attention's query, key and value) are stacked after scaling each to
unit Frobenius norm: in a freshly initialised model the value gradient is nearly rank one
and three orders of magnitude larger than the query's, so an unscaled stack would bury the
query's view of the other inputs under the rounding of the value's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

DEFAULT_RANK_TOLERANCE = 1e-6
FLOOR_FACTOR = 4.0


@dataclass(frozen=True)
class Span:
    """An orthonormal basis of the inputs' span and how it was told from rounding.

    Attributes:
        basis: H×r, orthonormal columns (float64).
        singular_values: all H singular values of the stacked gradients, relative to the
            largest, in decreasing order (float64).
        rank: r, the number of singular values above the rank tolerance.
        rank_tolerance: the relative threshold that set the rank.
    """

    basis: torch.Tensor
    singular_values: torch.Tensor
    rank: int
    rank_tolerance: float

    @property
    def dim(self) -> int:
        """H, the dimension of the space the inputs live in."""
        return int(self.basis.shape[0])

    @property
    def full(self) -> bool:
        """Whether the span is (nearly) the whole space, so that it tests nothing.

        LayerNorm outputs with a zero bias sum to zero and never span more than H − 1
        dimensions (a freshly initialised BERT's do), so H − 1 already counts as full.
        """
        return self.rank >= self.dim - 1

    @property
    def gap(self) -> float:
        """The first dropped singular value over the last kept one (0 when none dropped
        or none kept): how far the span stands above the rounding."""
        if self.rank == 0 or self.rank >= self.dim:
            return 0.0
        return float(self.singular_values[self.rank] / self.singular_values[self.rank - 1])

    def distances(self, vectors: torch.Tensor) -> torch.Tensor:
        """Each vector's distance to the span relative to its norm, in [0, 1].

        ‖x − UUᵀx‖² = ‖x‖² − ‖Uᵀx‖² costs one product with the basis; in float64 its
        cancellation still resolves distances down to about 1e-8.

        Args:
            vectors: … × H, any floating dtype.

        Returns:
            The relative distances, shape …, float64 (1 for a zero vector).
        """
        x = vectors.to(torch.float64)
        squared = (x * x).sum(-1)
        inside = x @ self.basis
        outside = (squared - (inside * inside).sum(-1)).clamp_min(0.0)
        safe = squared.clamp_min(torch.finfo(torch.float64).tiny)
        return torch.where(squared > 0, (outside / safe).sqrt(), torch.ones_like(squared))


def span_of(
    gradients: Sequence[torch.Tensor],
    rank_tolerance: float = DEFAULT_RANK_TOLERANCE,
    weights: Sequence[torch.Tensor] | None = None,
) -> Span:
    """The span of a layer's inputs from weight gradients (each out × H) of that input.

    Args:
        gradients: weight gradients whose rows live in the same input space (e.g. the
            query, key and value gradients of one attention layer); each is scaled to unit
            Frobenius norm before they are stacked.
        rank_tolerance: singular values at most this fraction of the largest are rounding.
        weights: for weight differences, the weights they were taken from (one per
            matrix). A difference θ' − θ in float32 carries the rounding of θ (about
            eps·|θ| per entry, which for small learning rates is not small next to the
            difference): each matrix is scaled by that rounding's spectral norm instead of
            its own norm, and singular values up to `FLOOR_FACTOR` times the stack's
            rounding count as rounding.

    Returns:
        The span: basis, relative singular values, rank.
    """
    dim = int(gradients[0].shape[-1])
    gram = torch.zeros(dim, dim, dtype=torch.float64, device=gradients[0].device)
    for i, gradient in enumerate(gradients):
        g = gradient.detach().to(torch.float64).reshape(-1, dim)
        # Each matrix is scaled by its own noise level so that none buries another's
        # directions: its norm for a gradient (rounding is relative), its weights'
        # rounding for a difference.
        scale = torch.linalg.matrix_norm(g) if weights is None else _rounding(g, weights[i])
        if scale > 0:
            g = g / scale
            gram += g.T @ g
    # The Gram matrix's eigenvalues are the squared singular values: an H×H eigenproblem
    # however many rows the gradients have; float64 resolves ratios down to 1e-8 there.
    eigenvalues, vectors = torch.linalg.eigh(gram)
    order = eigenvalues.flip(0).clamp_min(0.0)
    vectors = vectors.flip(1)
    singular = order.sqrt()
    top = singular[0] if singular[0] > 0 else singular.new_ones(())
    relative = singular / top
    threshold = rank_tolerance
    if weights is not None and singular[0] > 0:
        # In units of each matrix's rounding, the stack's rounding has a spectral norm of
        # about √(number of matrices).
        floor = FLOOR_FACTOR * len(gradients) ** 0.5
        threshold = max(threshold, float(floor / top))
    rank = int((relative > threshold).sum()) if singular[0] > 0 else 0
    return Span(
        basis=vectors[:, :rank].contiguous(),
        singular_values=relative,
        rank=rank,
        rank_tolerance=rank_tolerance,
    )


def _rounding(difference: torch.Tensor, weights: torch.Tensor) -> float:
    """The spectral norm of the float rounding in a weight difference θ' − θ: about
    eps · rms(θ) · (√rows + √columns) (a random matrix of entries of that size)."""
    # The subtraction rounds in the weights' dtype, whatever dtype the difference has now.
    eps = torch.finfo(weights.dtype).eps
    rms = float(weights.detach().double().pow(2).mean().sqrt())
    rows, columns = difference.shape
    return eps * rms * (rows**0.5 + columns**0.5)
