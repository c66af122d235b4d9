"""L-BFGS's curvature history of K trials and its inverse-Hessian product, per trial.

Each trial keeps its last `HISTORY_SIZE` pairs s = x₊ − x, y = ∇f₊ − ∇f in a ring buffer
K×size×N, with the small Gram matrices SᵀY and YᵀY kept up to date as pairs arrive. The
direction −H·g then uses L-BFGS's compact form (Byrd, Nocedal & Schnabel 1994), which is
the two-loop recursion's product (Nocedal & Wright, Alg. 7.4) written as four
matrix-vector products with the trial's buffers (read in place, never gathered) and one
triangular solve of at most size×size: trials at different iterations, whose newest pairs
sit in different slots, cost no copies and no loop over their pairs.
"""

from __future__ import annotations

import torch

# Curvature pairs kept per trial (torch's L-BFGS default, and DLG's).
HISTORY_SIZE = 100


class CurvatureHistory:
    """Each trial's last `size` pairs (s, y), in ring buffers K×size×N, and their Gram matrices.

    Trials keep their own number of pairs and their own newest slot (on the host: they
    only change when a trial accepts a pair), so trials at different iterations share one
    buffer.

    Args:
        trials: K.
        size: pairs kept per trial.
        like: a tensor of N values with the trials' dtype and device.
    """

    def __init__(self, trials: int, size: int, like: torch.Tensor) -> None:
        n = like.numel()
        self.size = size
        self.s = like.new_zeros(trials, size, n)
        self.y = like.new_zeros(trials, size, n)
        self.sy = like.new_zeros(trials, size, size)  # s_i·y_j
        self.yy = like.new_zeros(trials, size, size)  # y_i·y_j
        self.gamma = like.new_ones(trials)  # the initial inverse Hessian's scale, y·s / y·y
        self.count = [0] * trials
        self.head = [0] * trials  # the slot the next pair goes to

    @staticmethod
    def bytes_per_trial(n: int, size: int = HISTORY_SIZE, element_size: int = 4) -> int:
        """The history's memory for one trial of N variables."""
        return (2 * size * n + 2 * size * size) * element_size

    def reset(self, trial: int) -> None:
        """Forget trial `trial`'s pairs (its first iteration)."""
        self.count[trial] = self.head[trial] = 0
        self.gamma[trial] = 1

    def push(self, trial: int, s: torch.Tensor, y: torch.Tensor) -> None:
        """Keep the pair (s, y) of trial `trial`, dropping its oldest when full.

        The caller has checked the curvature y·s > 0 on the host (from directional
        derivatives it already read); everything here stays on the device.
        """
        slot = self.head[trial]
        self.s[trial, slot] = s
        self.y[trial, slot] = y
        # One pass over each buffer: Y·[s, y] gives s·y_j and y·y_j, S·y gives s_i·y.
        with_y = self.y[trial] @ torch.stack([s, y], dim=1)
        self.sy[trial, slot] = with_y[:, 0]  # s_slot·y_j
        self.sy[trial, :, slot] = self.s[trial] @ y  # s_i·y_slot
        self.yy[trial, slot] = with_y[:, 1]
        self.yy[trial, :, slot] = with_y[:, 1]
        yy = with_y[:, 1]
        ys = self.sy[trial, slot, slot]
        self.gamma[trial] = ys / yy[slot]
        self.head[trial] = (slot + 1) % self.size
        self.count[trial] = min(self.count[trial] + 1, self.size)

    def directions(self, trials: list[int], grads: torch.Tensor) -> torch.Tensor:
        """−H·g for each listed trial, H the L-BFGS inverse Hessian of its pairs.

        With a = Sᵀg, b = Yᵀg in the pairs' chronological order, R the upper triangle of
        SᵀY and D its diagonal: H·g = γg + S·R⁻ᵀ((D + γYᵀY)·R⁻¹a − γb) − γY·R⁻¹a.

        Args:
            trials: the trials asking, R of them.
            grads: their gradients, R×N.

        Returns:
            Their search directions, R×N.
        """
        out = torch.empty_like(grads)
        for i, k in enumerate(trials):
            out[i] = self._direction(k, grads[i])
        return out

    def _direction(self, k: int, g: torch.Tensor) -> torch.Tensor:
        gamma = self.gamma[k]
        count = self.count[k]
        if count == 0:
            return -gamma * g
        # Slots oldest first (the ring fills 0, 1, … and then overwrites the oldest).
        first = self.head[k] if count == self.size else 0
        # Made on the device: a host list copied there per trial and step would make the
        # host wait for the device on every direction.
        order = (torch.arange(count, device=g.device) + first) % self.size
        s, y = self.s[k], self.y[k]  # size×N, read in place
        a = (s @ g)[order]
        b = (y @ g)[order]
        sy = self.sy[k][order][:, order]
        upper = sy.triu()
        u = torch.linalg.solve_triangular(upper, a[:, None], upper=True)[:, 0]
        inner = sy.diagonal() * u + gamma * (self.yy[k][order][:, order] @ u) - gamma * b
        top = torch.linalg.solve_triangular(upper.T, inner[:, None], upper=False)[:, 0]
        weights_s = g.new_zeros(self.size).index_copy(0, order, top)
        weights_y = g.new_zeros(self.size).index_copy(0, order, u)
        hg = gamma * g + weights_s @ s - gamma * (weights_y @ y)
        return -hg
