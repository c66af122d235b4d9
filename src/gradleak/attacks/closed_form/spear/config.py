"""SPEAR's options: `SpearConfig` and its default start budget."""

from __future__ import annotations

from dataclasses import dataclass

from gradleak.attacks.closed_form.base import check_no_iterations
from gradleak.core.errors import GradleakError

# Measured on a 2-core CPU (one thread), CIFAR-10 and MNIST: mlp1-256 certifies B = 24
# within about 5 000 starts (2–5 s), mlp1-1024 B = 32 within about 5 000 (10–20 s); a
# start costs about 1 ms at B = 24 and 1.5 ms at B = 32 on mlp1-256, so 20 000 starts
# bound a failing run to about 30 s there (about 45 s on mlp1-1024).
DEFAULT_MAX_SAMPLES = 20_000


@dataclass(frozen=True)
class SpearConfig:
    """Options of SPEAR; iterations and restarts are fixed (no optimisation).

    Attributes:
        max_samples: sampled starts (B−1 random rows each) before giving up, ≥ 1.
        chunk: starts solved together in one batched call, ≥ 1.
        refine_steps: reweighted least-squares steps applied to each start, ≥ 0 (0: the
            paper's plain sampling).
        refine_eps: ε of the refinement's weights 1 / (|L q| / max|L q| + ε), > 0.
        zero_tol: an entry of a unit gradient column counts as zero when its magnitude is
            at most this fraction of the column's largest, in (0, 1).
        min_zero_fraction: a candidate column needs at least this fraction of the live
            rows to be zero, in [0, 1).
        margin: the certificate ignores rows with |W x + b| at most this fraction of the
            largest, in [0, 1).
        rank_tol: singular values at most this fraction of the largest count as zero when
            the gradient's numerical rank is reported, in (0, 1).
        time_limit: seconds the search may run (checked between chunks), > 0; None: no
            limit. A search it ends reports `budget_exhausted`, like the sample budget;
            time-budgeted studies (`gradleak audit`) set it.
    """

    max_samples: int = DEFAULT_MAX_SAMPLES
    chunk: int = 512
    refine_steps: int = 20
    refine_eps: float = 1e-3
    zero_tol: float = 1e-6
    min_zero_fraction: float = 0.1
    margin: float = 1e-4
    rank_tol: float = 1e-6
    time_limit: float | None = None
    iterations: int = 0
    restarts: int = 1

    def validate(self) -> SpearConfig:
        """This config, checked.

        Returns:
            The config itself.

        Raises:
            GradleakError: a count below 1, a tolerance or fraction out of range, or
                iterations/restarts other than 0/1 (one line each).
        """
        for name in ("max_samples", "chunk"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise GradleakError(f"{name} must be a positive integer, got {value!r}")
        steps = self.refine_steps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise GradleakError(f"refine_steps must be a non-negative integer, got {steps!r}")
        if not self.refine_eps > 0:
            raise GradleakError(f"refine_eps must be positive, got {self.refine_eps}")
        for name in ("zero_tol", "rank_tol"):
            if not 0 < getattr(self, name) < 1:
                raise GradleakError(f"{name} must lie in (0, 1), got {getattr(self, name)}")
        for name in ("min_zero_fraction", "margin"):
            if not 0 <= getattr(self, name) < 1:
                raise GradleakError(f"{name} must lie in [0, 1), got {getattr(self, name)}")
        if self.time_limit is not None and not self.time_limit > 0:
            raise GradleakError(f"time_limit must be positive seconds, got {self.time_limit}")
        check_no_iterations(self.iterations, self.restarts, "the spear attack")
        return self
