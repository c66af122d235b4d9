"""SPEAR's search for Q's columns: sampled and steered starts, filtering, greedy selection
and the completion sweeps, certified as it goes."""

from __future__ import annotations

import math
import time

import torch

from gradleak.attacks.closed_form.spear.certificate import certify
from gradleak.attacks.closed_form.spear.config import SpearConfig
from gradleak.attacks.closed_form.spear.directions import (
    null_directions,
    null_vector,
    polish,
    refine,
    split_mixture,
    sweep_zero_sets,
)
from gradleak.attacks.closed_form.spear.programs import estimate_row, pattern_is_realizable
from gradleak.core.errors import GradleakError

# The completion searches the missing directions when at most this many are missing: up to
# 2 one sweep covers every candidate, past that each sweep is a random draw whose odds fall
# with every further missing direction.
_COMPLETE_AT_MOST = 4

# Unit directions closer than this (|cos|) are one direction.
_SAME_DIRECTION = 1 - 1e-8
# A mixture's split directions are split again this many times over at most (a part of
# a mixture of d columns has d−1 more zeros, so few levels take it apart).
_SPLIT_DEPTH = 3
# Every null-space solution has k−1 zeros, and among hundreds of rows a few more fall under
# zero_tol by chance: a candidate needs this many beyond k−1 (a column has about half the
# rows).
_SPARE_ZEROS = 8


class ColumnSearch:
    """The sampling, filtering and greedy selection of Q's columns, certified as it goes.

    Args:
        basis: L, the live rows' orthonormal factor of ∂L/∂W, rows × k (float64).
        right: R, with ∂L/∂W ≈ L R, k × in_features.
        coords: ∂L/∂b in L's coordinates (= Q 1), k.
        weight: the layer's weight on the live rows, rows × in_features.
        bias: the layer's bias on the live rows.
        config: the search's settings.
    """

    def __init__(
        self,
        basis: torch.Tensor,
        right: torch.Tensor,
        coords: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor,
        config: SpearConfig,
    ) -> None:
        self.basis, self.right, self.coords = basis, right, coords
        self.weight, self.bias, self.config = weight, bias, config
        rows, k = basis.shape
        self.k = k
        self.min_zeros = max(k - 1 + _SPARE_ZEROS, math.ceil(config.min_zero_fraction * rows))
        # Pre-activations in Q's coordinates: W X + b = (Q⁻¹ A)ᵀ, A = R Wᵀ + (Q 1) bᵀ.
        pre = right @ weight.T + coords[:, None] * bias[None, :]
        norms = torch.linalg.vector_norm(pre, dim=0).clamp_min(torch.finfo(pre.dtype).tiny)
        self.pre = pre / norms
        # zero pattern (bytes) → (direction, zero mask, zero count)
        self.candidates: dict[bytes, tuple[torch.Tensor, torch.Tensor, int]] = {}
        self.realizable: dict[bytes, bool] = {}
        self.completion_keys: set[bytes] = set()
        self.chosen_count = 0
        self.completed = 0
        self.sweeps = 0
        self.interrupted = False  # an interrupt ended the search (`run`)
        self._verified: list[bytes] = []
        self._swept: set[tuple[bytes, ...]] = set()
        self._mixtures: set[bytes] = set()
        self._found = basis.new_zeros(0, k)  # the candidates' unit directions
        self._generator = torch.Generator()  # replaced by the run's CPU generator
        self._spans: dict[tuple[bytes, ...], torch.Tensor | None] = {}
        self._rows: dict[bytes, torch.Tensor | None] = {}
        self._best: tuple[torch.Tensor, torch.Tensor, list[bool], list[int]] | None = None

    def run(self, generator: torch.Generator) -> tuple[int, bool]:
        """Draw chunks of starts (and completion sweeps) until all k inputs are certified
        or the budget ends.

        Returns:
            (starts and sweeps drawn, whether the budget (samples or time) ended first).
        """
        self._generator = generator
        if self.k == 1:
            # One sample: ∂L/∂Z is L itself up to scale, nothing to search; its live rows
            # hold no zeros (a zero there would be zero for the whole batch), so the
            # sparsity filter does not apply.
            direction = torch.ones(1, dtype=self.basis.dtype, device=self.basis.device)
            self.candidates[b""] = (
                direction,
                torch.zeros_like(self.basis[:, 0], dtype=torch.bool),
                0,
            )
            self._solve()
            return 1, False
        drawn = 0
        limit = self.config.time_limit
        until = None if limit is None else time.monotonic() + limit
        try:
            while drawn < self.config.max_samples:
                if until is not None and drawn and time.monotonic() >= until:
                    break  # the time limit ends the search as the sample budget would

                count = min(self.config.chunk, self.config.max_samples - drawn)
                drawn += count
                if self._add(self._directions(count, generator)) and self._solve():
                    return drawn, False
                sweeps = min(self._sweeps_wanted(count), self.config.max_samples - drawn)
                if sweeps:
                    drawn += sweeps
                    if self._complete(sweeps, generator) and self._solve():
                        return drawn, False
        except KeyboardInterrupt:
            # Ctrl-C or SIGTERM: stop searching and keep what is certified so far.
            self.interrupted = True
        if self._best is None:
            self._solve()
        return drawn, not self.interrupted

    def best(self) -> tuple[torch.Tensor, torch.Tensor, list[bool], list[int]]:
        """The inputs, columns, certificates and mismatch counts of the best set so far."""
        if self._best is None:
            raise GradleakError("the spear search returned before solving; this is a bug")
        return self._best

    def _directions(self, count: int, generator: torch.Generator) -> torch.Tensor:
        """`count` sampled null-space directions (count × k), refined as configured."""
        rows = self.basis.shape[0]
        span = self._missing_span()
        steered = 0 if span is None else count // 2
        # Draws on the CPU generator, then moved: the same seed samples alike on any device.
        weights = torch.ones(count - steered, rows, dtype=torch.float64)
        picked = torch.multinomial(weights, self.k - 1, replacement=False, generator=generator)
        picked = picked.to(self.basis.device)
        q = null_directions(self.basis, picked)
        if span is not None:
            # Starts inside the estimated span of the missing columns: m−1 random zero rows
            # of L restricted to it.
            weights = torch.ones(steered, rows, dtype=torch.float64)
            picked = torch.multinomial(
                weights, span.shape[1] - 1, replacement=False, generator=generator
            ).to(self.basis.device)
            sub = (self.basis @ span)[picked]  # n × (m−1) × m
            inner = torch.linalg.qr(sub.mT, mode="complete").Q[..., -1]
            q = torch.cat([q, inner @ span.T])
        if self.config.refine_steps == 0:
            return q
        return refine(self.basis, q, self.config.refine_steps, self.config.refine_eps)

    def _missing_span(self) -> torch.Tensor | None:
        """An orthonormal basis (k × m) near the span of the m columns missing from the
        verified set, or None when m ≤ 2 (the completion covers those) or m = k.

        The missing columns are orthogonal to the verified inputs' rows r of Q⁻¹. Each such
        r satisfies rᵀ c = 1, is orthogonal to the other verified columns and realises its
        column's zero set; the point of that polytope farthest from its faces (`estimate_row`)
        stands in for it.
        """
        missing = self.k - len(self._verified)
        if missing <= 2 or missing == self.k or self.config.refine_steps == 0:
            return None
        key = tuple(self._verified)
        if key not in self._spans:
            known = torch.stack([self.candidates[c][0] for c in self._verified], dim=1)
            for n, c in enumerate(self._verified):
                # One programme per column, with the columns verified when it joined: the
                # estimate only steers the starts, and each programme costs milliseconds.
                if c not in self._rows:
                    others = torch.cat([known[:, :n], known[:, n + 1 :]], dim=1)
                    zero = self.candidates[c][1]
                    self._rows[c] = estimate_row(self.pre, self.coords, zero, others)
            estimates = [row for c in self._verified if (row := self._rows[c]) is not None]
            span = None
            if len(estimates) == len(self._verified):
                rows = torch.stack(estimates)
                span = torch.linalg.svd(rows, full_matrices=True).Vh[len(estimates) :].T
            self._spans[key] = span
        return self._spans[key]

    def _add(self, directions: torch.Tensor) -> bool:
        """Keep the sparse directions among `directions`; True when a new one was kept."""
        return bool(self._add_keys(directions))

    def _add_keys(self, directions: torch.Tensor, depth: int = 0, floor: int = 0) -> list[bytes]:
        """Keep the sparse directions among `directions`; the keys of the new ones.

        Mixtures are split (`split_mixture`) instead of kept, `_SPLIT_DEPTH` times over at most;
        a direction needs more than `floor` zeros (besides `min_zeros`).
        """
        values = (directions @ self.basis.T).abs()
        zero = values <= self.config.zero_tol * values.amax(dim=1, keepdim=True)
        counts = zero.sum(dim=1)
        added = []
        kept = (counts >= self.min_zeros) & (counts > floor)
        for n in kept.nonzero().flatten().tolist():
            key = zero[n].cpu().numpy().tobytes()
            if key in self.candidates or key in self._mixtures:
                continue
            # The same direction found twice may differ in an entry at the zero threshold
            # (wide layers have many); one copy is enough.
            overlap = (self._found @ directions[n]).abs()
            if overlap.numel() and float(overlap.max()) > _SAME_DIRECTION:
                continue
            parts = (
                split_mixture(self.basis, zero[n], self.config.zero_tol, self._generator)
                if depth < _SPLIT_DEPTH
                else None
            )
            if parts is None:
                # Re-solved on all its zero rows rather than the k−1 that gave it, the
                # direction's zeros sit lower, clear of the certificate's zero_tol.
                direction = polish(self.basis, directions[n], self.config.zero_tol)
                values_n = (self.basis @ direction).abs()
                zero_n = values_n <= self.config.zero_tol * values_n.max()
                key = zero_n.cpu().numpy().tobytes()
                if key in self.candidates:
                    continue
                self.candidates[key] = (direction, zero_n, int(zero_n.sum()))
                self._found = torch.cat([self._found, direction[None]])
                added.append(key)
            else:
                self._mixtures.add(key)
                # A part that only gained its d−1 pinned rows (and a few by chance) is
                # still a mixture of the others; a column gains its own zeros.
                added += self._add_keys(parts, depth + 1, int(counts[n]) + _SPARE_ZEROS)
        return added

    def _is_realizable(self, key: bytes) -> bool:
        if key not in self.realizable:
            zero = self.candidates[key][1]
            self.realizable[key] = pattern_is_realizable(self.pre, self.coords, zero)
        return self.realizable[key]

    def _choose(self) -> list[bytes]:
        """Greedy, most zeros first: no subset of a chosen zero set, linearly independent.

        The first pass takes only candidates whose zero set some input realises
        (`pattern_is_realizable`); `_verified` keeps them for the completion. When they are
        fewer than k, a second pass fills up with the others as a best guess.
        """
        ordered = sorted(self.candidates, key=lambda key: -self.candidates[key][2])
        chosen: list[bytes] = []
        ortho = torch.zeros(self.k, 0, dtype=torch.float64, device=self.basis.device)
        for verify in (True, False):
            for key in ordered:
                if len(chosen) == self.k:
                    break
                direction, mask, _ = self.candidates[key]
                if key in chosen or any(
                    not bool((mask & ~self.candidates[c][1]).any()) for c in chosen
                ):
                    continue  # a mixture of chosen columns: zero only where they all are
                rest = direction - ortho @ (ortho.T @ direction)
                norm = torch.linalg.vector_norm(rest)
                if norm < 1e-6 or (verify and not self._is_realizable(key)):
                    continue
                chosen.append(key)
                ortho = torch.cat([ortho, (rest / norm)[:, None]], dim=1)
            if verify:
                self._verified = list(chosen)
        return chosen

    def _sweeps_wanted(self, count: int) -> int:
        """Completion sweeps to run after a chunk of `count` starts (0: none).

        With m ≤ 2 directions missing one sweep tries every candidate, so it runs once per
        verified set; past that each sweep is a random draw, and a chunk buys count/4 (a
        sweep costs a few starts and, at m ≤ 4, finds a column far more often).
        """
        missing = self.k - len(self._verified)
        if missing < 1 or missing > _COMPLETE_AT_MOST:
            return 0
        if missing <= 2:
            return 0 if tuple(self._verified) in self._swept else 1
        return max(1, count // 4)

    def _complete(self, sweeps: int, generator: torch.Generator) -> bool:
        """Search the m directions missing from the verified set; True when one was added.

        The missing inputs' rows r of Q⁻¹ are orthogonal to the verified directions, so
        r = P y for an orthonormal basis P of their complement, with (Pᵀ c)ᵀ y = 1: an
        (m−1)-dimensional space in which each row's pre-activation aⱼᵀ P y is linear. A
        candidate r gives the inactive set {aⱼᵀ r ≤ 0}, and it is a missing input's when L
        restricted to those rows has a null vector (the missing column). A sweep follows a
        line of that space (for m > 2, the line on which m−2 random rows' pre-activations
        are zero, so it runs along a face of the cells it passes; those rows are left out
        of the test) and tries every stretch between two sign changes at once.
        """
        self._swept.add(tuple(self._verified))
        missing = self.k - len(self._verified)
        complement = torch.eye(self.k, dtype=self.basis.dtype, device=self.basis.device)
        if self._verified:
            known = torch.stack([self.candidates[key][0] for key in self._verified], dim=1)
            complement = torch.linalg.svd(known, full_matrices=True).U[:, -missing:]
        pre = complement.T @ self.pre  # m × rows
        total = complement.T @ self.coords
        rows = pre.shape[1]
        added: list[bytes] = []
        for _ in range(sweeps):
            self.sweeps += 1
            left_out = torch.zeros(rows, dtype=torch.bool, device=pre.device)
            if missing == 1:
                alpha, beta = pre[0] / total[0], torch.zeros_like(pre[0])
            else:
                faces = torch.randperm(rows, generator=generator, device="cpu")[: missing - 2]
                faces = faces.to(pre.device)
                left_out[faces] = True
                system = torch.cat([total[None], pre[:, faces].T])  # (m−1) × m
                start = (
                    torch.linalg.pinv(system)
                    @ torch.eye(missing - 1, 1, dtype=pre.dtype, device=pre.device).flatten()
                )
                along = torch.linalg.svd(system, full_matrices=True).Vh[-1]
                alpha, beta = start @ pre, along @ pre
            zeros = sweep_zero_sets(
                self.basis,
                alpha,
                beta,
                left_out,
                zero_tol=self.config.zero_tol,
                min_zeros=self.min_zeros,
            )
            for zero in zeros:
                added += self._add_keys(null_vector(self.basis, zero)[None])
        self.completion_keys.update(added)
        return bool(added)

    def _solve(self) -> bool:
        """Solve and certify the current greedy set; True when all k inputs are certified."""
        keys = self._choose()
        self.chosen_count = len(keys)
        self.completed = sum(key in self.completion_keys for key in keys)
        chosen = [self.candidates[key][0] for key in keys]
        directions = torch.stack(chosen, dim=1) if chosen else self.basis.new_zeros(self.k, 0)
        if len(chosen) < self.k:
            # Best guess for the rest: complete the chosen directions to a basis.
            filler = torch.linalg.qr(
                torch.cat(
                    [directions, torch.eye(self.k, dtype=torch.float64, device=self.basis.device)],
                    dim=1,
                ),
                mode="reduced",
            ).Q[:, len(chosen) : self.k]
            directions = torch.cat([directions, filler], dim=1)
        # Scales from the bias gradient: Σ s_i q_i = Lᵀ ∂L/∂b; then Q = directions · diag(s).
        scales = torch.linalg.solve(directions, self.coords)
        unscaled = torch.linalg.solve(directions, self.right)  # rows: s_i x_iᵀ
        safe = torch.where(scales.abs() > 0, scales, torch.ones_like(scales))
        features = unscaled / safe[:, None]
        columns = self.basis @ (directions * scales)
        certified, mismatches = certify(
            features,
            columns,
            self.weight,
            self.bias,
            zero_tol=self.config.zero_tol,
            margin=self.config.margin,
        )
        certified = [c and len(chosen) == self.k for c in certified]
        if self._best is None or sum(certified) >= sum(self._best[2]):
            self._best = (features, columns, certified, mismatches)
        return all(certified)
