"""Adam over stacked trials, each with its own step size, step count and schedule."""

from __future__ import annotations

from collections.abc import Sequence

import torch

# Inverting Gradients divides the step size by 10 at 3/8, 5/8 and 7/8 of a trial's run.
DECAY_FRACTIONS = (3 / 8, 5 / 8, 7 / 8)
DECAY_FACTOR = 0.1


def decay_milestones(iterations: int) -> list[int]:
    return [int(iterations * f) for f in DECAY_FRACTIONS]


class BatchedAdam:
    """Adam (as torch.optim.Adam, no weight decay) on a K×… tensor, one trial per row.

    A trial advances only when it is among the `index` rows given to `step`, so a trial
    that stopped early keeps its state and its images. Step sizes and the decay schedule
    are per trial and live on the host, so the hot loop never waits for the device.
    """

    def __init__(
        self,
        param: torch.Tensor,
        lr: Sequence[float],
        iterations: Sequence[int],
        *,
        lr_decay: bool = True,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        k = param.shape[0]
        if len(lr) != k or len(iterations) != k:
            raise ValueError(f"need one lr and one iteration count per trial ({k})")
        self.param = param
        self.base_lr = [float(v) for v in lr]
        self.milestones = [decay_milestones(n) if lr_decay else [] for n in iterations]
        self.betas = betas
        self.eps = eps
        self.steps = [0] * k
        self.exp_avg = torch.zeros_like(param)
        self.exp_avg_sq = torch.zeros_like(param)
        self._view = (k,) + (1,) * (param.dim() - 1)
        self._t = torch.zeros(k, dtype=param.dtype, device=param.device)
        self._lr_values: list[float] = []
        self._lr = torch.empty(0)

    def lr(self, k: int) -> float:
        """Trial k's step size for its next step."""
        passed = sum(self.steps[k] >= m for m in self.milestones[k])
        return self.base_lr[k] * DECAY_FACTOR**passed

    def _refresh_lr(self) -> None:
        lrs = [self.lr(k) for k in range(len(self.steps))]
        if lrs != self._lr_values:
            self._lr_values = lrs
            self._lr = torch.tensor(lrs, dtype=self.param.dtype, device=self.param.device)

    @torch.no_grad()
    def step(self, grad: torch.Tensor, index: list[int] | None = None) -> None:
        """Apply one step to the trials in `index` (None: all); `grad` has their rows."""
        rows = range(len(self.steps)) if index is None else index
        self._refresh_lr()  # host-side schedule: a new tensor only when a step size changes
        rows_t = None if index is None else torch.tensor(index, device=self.param.device)
        pick = (lambda t: t) if rows_t is None else (lambda t: t[rows_t])
        if rows_t is None:
            self._t += 1
        else:
            self._t[rows_t] += 1
        for k in rows:
            self.steps[k] += 1
        b1, b2 = self.betas
        t = pick(self._t).reshape((-1,) + self._view[1:])
        lr = pick(self._lr).reshape(t.shape)
        step_size = lr / (1 - torch.pow(b1, t))
        correction2 = (1 - torch.pow(b2, t)).sqrt()
        param, m, v = pick(self.param), pick(self.exp_avg), pick(self.exp_avg_sq)
        m.mul_(b1).add_(grad, alpha=1 - b1)
        v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        param.sub_(step_size * m / (v.sqrt() / correction2 + self.eps))
        if rows_t is not None:  # indexing copied the rows: write them back
            self.param[rows_t], self.exp_avg[rows_t], self.exp_avg_sq[rows_t] = param, m, v
