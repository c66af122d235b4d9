"""SPEAR at one Linear + ReLU layer: the method, step by step, and the batch it recovers.

Dimitrov et al., "SPEAR: Exact Gradient Inversion of Batches in Federated Learning"
(NeurIPS 2024). Let the model's first layer compute Z = W X + b on the batch's inputs
X (in × B), followed by a ReLU. Its shared gradients are ∂L/∂W = G Xᵀ and ∂L/∂b = G 1,
where G = ∂L/∂Z (out × B) holds one column per sample (the batch mean's 1/B sits in G and
cancels below). So ∂L/∂W has rank B, and any rank-B factorisation ∂L/∂W = L R (here the
SVD, L with orthonormal columns) satisfies G = L Q and Xᵀ = Q⁻¹ R for one unknown
invertible B×B matrix Q. The ReLU makes every column of G sparse: a unit inactive for
sample i passes it no gradient, so about half of column i is exactly zero.

The search for Q's columns:

1. Rows of ∂L/∂W that are entirely zero (units inactive for the whole batch) carry no
   information; they are dropped before anything else and never counted as zeros.
2. Sampling (the paper's procedure): pick B−1 of the remaining rows of L at random; the
   one-dimensional null space of that (B−1)×B submatrix is a direction q, and L q is a
   column of G exactly when all the picked rows are zeros of that column. Many samples are
   solved at once, one batched QR per chunk.
3. Refinement (`refine_steps`, on by default; 0 gives the plain sampling): each sampled
   direction is refined by iteratively reweighted least squares towards a minimum of
   ‖L q‖₁ over unit q, weights 1 / (|L q| + ε), which pulls it onto the sparsest nearby
   column of G; the result is then re-solved exactly as the null space of its B−1
   smallest rows, so a refined candidate is a sampled candidate of step 2 whose rows were
   chosen well. Its certificate (step 6) is unchanged. Sampling alone needs about
   2^(B−1)/B samples per column (hopeless within a minute past B ≈ 18 on a CPU); the
   refinement finds columns from a few percent of the starts at B = 24.
4. Filtering: a candidate is kept when L q has at least `min_zeros` zero entries (8 more
   than the B−1 every null-space solution has, since a few more fall under zero_tol by
   chance, and `min_zero_fraction` of the rows); candidates with the same zero pattern are
   one direction. A candidate whose zero rows leave L a null space of dimension d ≥ 2 is
   a mixture of d columns: directions in that null space pinned by d−1 further random
   rows split it, and are filtered in turn.
5. Selection: every recovered input is xᵀ = rᵀ R for a row rᵀ of Q⁻¹ with rᵀ c = 1
   (c = Lᵀ ∂L/∂b = Q 1), so its pre-activations W x + b = Aᵀ r with A = R Wᵀ + c bᵀ are
   known up to r; a true column is zero exactly where Aᵀ r ≤ 0 for its own r, and one
   linear programme (`pattern_is_realizable`) tells whether any r realises a candidate's
   zero set (a mixture's is not). Candidates are taken greedily, most zeros first,
   skipping one whose zero set lies inside an already chosen one's, one linearly
   dependent on those chosen, and one whose zero set is not realisable; only when fewer
   than B pass are the others used to fill up, as a best guess. With B directions q_i
   the scales s_i follow from the bias gradient by solving [q_1 … q_B] s = c, and
   Q = [s_1 q_1 … s_B q_B] gives Xᵀ = Q⁻¹ R.
   Steering: with m columns still missing (m > 2), the missing columns are orthogonal to
   the found inputs' rows r; the point deepest inside each found column's polytope of r
   (a linear programme, `estimate_row`) stands in for it, and half of each chunk's
   starts are drawn inside the orthogonal complement of those estimates (m−1 random zero
   rows there), then refined as in step 3.
   Completion: the missing inputs' rows r are orthogonal to the found columns, an
   m-dimensional space with rᵀ c = 1 in which every pre-activation is linear. A line of
   that space is swept at once: between two sign changes the inactive set is fixed, and
   it is a missing input's when L restricted to it has a null vector (that column). For
   m = 1 the point is unique and for m = 2 one line holds every missing input, so one
   sweep settles them; for m = 3, 4 random lines along faces of the cells are swept (each
   sweep counts as one start of the budget).
6. Certificate: the server knows W and b (they are the model's parameters), so it
   recomputes z_i = W x_i + b for every recovered input. The input is certified when the
   zero pattern of its recovered gradient column L q_i s_i equals the inactive pattern
   z_i ≤ 0 on every row that is not dead for the whole batch, except rows with
   |z_i| ≤ `margin` · max|z_i|, where rounding decides the sign. A wrong input agrees
   with a wrong pattern on hundreds of rows only by accident.

The search stops as soon as all B inputs are certified, or when `max_samples` starts are
spent: then the attack returns the certified inputs and its best guesses for the rest,
flagged uncertified. If ∂L/∂W has numerical rank below B (e.g. two identical samples),
only that many inputs can be separated; the missing ones are returned as zeros,
uncertified.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from gradleak.attacks.closed_form.analytic import layer_gradients
from gradleak.attacks.closed_form.spear.checks import check_batch_fits
from gradleak.attacks.closed_form.spear.config import SpearConfig
from gradleak.attacks.closed_form.spear.search import ColumnSearch
from gradleak.core.errors import GradleakError
from gradleak.core.update import SharedUpdate, UpdateKind


@dataclass(frozen=True)
class SpearResult:
    """A batch recovered at one Linear + ReLU layer, with its certificate and search record.

    Attributes:
        layer: the layer's qualified name.
        features: the recovered inputs, B × in_features, in the gradient's dtype (rows in
            no particular order).
        columns: the recovered ∂L/∂Z columns, out_features × B (float64; the batch mean's
            1/B included).
        certified: per returned input, whether it passed the ReLU-pattern certificate.
        mismatches: per returned input, the checked rows where the patterns disagree.
        rank: the numerical rank of ∂L/∂W (singular values above rank_tol · largest).
        singular_ratio: σ_B / σ_1 of ∂L/∂W (how well the batch's part stands out).
        rank_gap: σ_(B+1) / σ_B (near 0 for an exact rank-B gradient; 0 when undefined).
        residual: ‖∂L/∂W − L R‖ / ‖∂L/∂W‖ of the rank-B fit.
        bias_residual: the part of ∂L/∂b outside span(L), relative.
        live_rows: rows of ∂L/∂W not entirely zero.
        samples: starts drawn.
        candidates: distinct sparse directions kept after filtering.
        directions: independent directions chosen (B when the search completed).
        completed_directions: chosen directions found by the completion sweeps.
        sweeps: completion sweeps run (counted in `samples`).
        budget_exhausted: the starts ran out before every input was certified.
        interrupted: Ctrl-C or SIGTERM ended the search; what was certified is kept.
    """

    layer: str
    features: torch.Tensor
    columns: torch.Tensor
    certified: tuple[bool, ...]
    mismatches: tuple[int, ...]
    rank: int
    singular_ratio: float
    rank_gap: float
    residual: float
    bias_residual: float
    live_rows: int
    samples: int
    candidates: int
    directions: int
    completed_directions: int
    sweeps: int
    budget_exhausted: bool
    interrupted: bool = False

    @property
    def num_certified(self) -> int:
        return sum(self.certified)


def spear_layer_input(
    update: SharedUpdate,
    layer_name: str,
    layer: nn.Linear,
    batch_size: int,
    *,
    config: SpearConfig | None = None,
    seed: int = 0,
) -> SpearResult:
    """Recover the B inputs of Linear `layer` (followed by a ReLU) from a gradient update.

    Computed in float64 on the update's device. See the module docstring for the steps.

    Args:
        update: a gradient holding `layer_name`'s weight (out × in) and bias (out).
        layer_name: the qualified name of the layer ("" for a bare Linear).
        layer: the server's copy of that layer: its weight and bias certify the result.
        batch_size: B, the number of samples behind the gradient, ≥ 1.
        config: the search's settings (None: the defaults).
        seed: seeds the sampling; the same seed gives the same result.

    Returns:
        The recovered inputs and gradient columns, per-input certificates and the
        search's record (`SpearResult`).

    Raises:
        GradleakError: when the update is not a gradient.
        GradleakError: when the update has no 2-D weight or no matching bias for the layer,
            or their shapes differ from `layer`'s.
        GradleakError: when `batch_size` is not a positive integer, or exceeds the layer's
            width or input size.
        GradleakError: when every row of the weight gradient is zero.
    """
    config = (config or SpearConfig()).validate()
    if update.kind is not UpdateKind.GRADIENT:
        raise GradleakError(
            f"the spear attack reads a gradient but the update is a {update.kind.value}; "
            "attack a FedSGD update (--protocol fedsgd)"
        )
    weight_grad, bias_grad = layer_gradients(update, layer_name)
    if weight_grad.shape != layer.weight.shape:
        raise GradleakError(
            f"the weight gradient of layer {layer_name!r} has shape {tuple(weight_grad.shape)} "
            f"but the layer's weight has {tuple(layer.weight.shape)}; pass the model that "
            "produced the update"
        )
    check_batch_fits(layer, batch_size)
    device = weight_grad.device
    # Float64: the null spaces and the certificate's zero test need more than float32's
    # 7 digits once the batch's smallest singular value is far below its largest.
    gw, gb = weight_grad.double(), bias_grad.double()
    weight = layer.weight.detach().to(device, torch.float64)
    bias = layer.bias.detach().to(device, torch.float64)
    row_norms = torch.linalg.vector_norm(gw, dim=1)
    top = row_norms.max().item()
    if top == 0:
        raise GradleakError(
            f"every weight gradient of layer {layer_name!r} is zero, so no row reveals the "
            "batch; the spear attack needs samples whose loss reaches that layer"
        )
    live = (row_norms > 1e-12 * top).nonzero().flatten()
    gw_live, gb_live = gw[live], gb[live]
    u, s, vh = torch.linalg.svd(gw_live, full_matrices=False)
    rank = int((s > config.rank_tol * s[0]).sum())
    k = min(batch_size, rank)
    basis = u[:, :k]  # L: orthonormal columns
    right = s[:k, None] * vh[:k]  # R: ∂L/∂W ≈ L R
    total = torch.linalg.vector_norm(s).item()
    residual = torch.linalg.vector_norm(s[k:]).item() / total
    coords = basis.T @ gb_live  # ∂L/∂b in L's coordinates, = Q 1
    gb_norm = torch.linalg.vector_norm(gb_live).item()
    bias_residual = (
        torch.linalg.vector_norm(gb_live - basis @ coords).item() / gb_norm if gb_norm else 0.0
    )
    search = ColumnSearch(basis, right, coords, weight[live], bias[live], config)
    # A CPU generator on every device: random draws stay on the CPU, so a seed samples the
    # same rows on a GPU as here.
    generator = torch.Generator().manual_seed(seed)
    samples, budget_exhausted = search.run(generator)
    features_k, columns_k, certified_k, mismatches_k = search.best()
    features = torch.zeros(batch_size, gw.shape[1], dtype=torch.float64, device=device)
    features[:k] = features_k
    columns = torch.zeros(gw.shape[0], batch_size, dtype=torch.float64, device=device)
    columns[live, :k] = columns_k
    missing = batch_size - k
    return SpearResult(
        layer=layer_name,
        features=features.to(weight_grad.dtype),
        columns=columns,
        certified=tuple(certified_k) + (False,) * missing,
        mismatches=tuple(mismatches_k) + (live.numel(),) * missing,
        rank=rank,
        singular_ratio=(s[k - 1] / s[0]).item(),
        rank_gap=(s[k] / s[k - 1]).item() if k < s.numel() else 0.0,
        residual=residual,
        bias_residual=bias_residual,
        live_rows=live.numel(),
        samples=samples,
        candidates=len(search.candidates),
        directions=search.chosen_count,
        completed_directions=search.completed,
        sweeps=search.sweeps,
        budget_exhausted=budget_exhausted,
        interrupted=search.interrupted,
    )
