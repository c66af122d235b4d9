"""The (ε, δ) a training run spends on its DP mechanisms, by Opacus's RDP accountant.

DP-SGD's mechanism is the sampled Gaussian mechanism (Abadi et al. 2016; its Rényi-DP
analysis: Mironov 2017, Mironov, Talwar and Zhang 2019): each step draws a batch in which
every record is included independently with probability q (Poisson sampling), clips each
record's contribution to L2 norm C, sums them and adds Gaussian noise of standard deviation
σ·C. A defense that runs such a mechanism declares it as a `GaussianMechanism(σ)`.

Several mechanisms applied to the same sampled batch in one step are not independent
draws: they share the batch. Releasing S + N(0, σ₁²C₁²) and S' + N(0, σ₂²C₂²) for sums S, S'
of one-record sensitivity C₁, C₂ is exactly as private as one Gaussian mechanism of noise
multiplier σ = (σ₁⁻² + σ₂⁻²)^(-1/2) on that batch (the precision-weighted mean is a
sufficient statistic). Entering them in the accountant as separately sampled mechanisms
would understate ε under subsampling, so one step enters as that one mechanism, and the
accountant composes the steps (its history holds (σ, q, steps) entries).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from gradleak.core.errors import GradleakError

SIGMA_RANGE = "a finite number >= 0"


@dataclass(frozen=True)
class GaussianMechanism:
    """Gaussian noise σ·C on a sum of per-record contributions each clipped to L2 norm C.

    Args:
        noise_multiplier: σ, the noise's standard deviation over the sum's one-record
            sensitivity C; a finite number >= 0 (0: no privacy).

    Raises:
        GradleakError: when `noise_multiplier` is not a finite number >= 0.
    """

    noise_multiplier: float

    def __post_init__(self) -> None:
        _check_sigma(self.noise_multiplier)
        object.__setattr__(self, "noise_multiplier", float(self.noise_multiplier))


def _check_sigma(sigma: float) -> None:
    if not (math.isfinite(sigma) and sigma >= 0):  # also rejects NaN
        raise GradleakError(f"noise multiplier must be {SIGMA_RANGE}, got {sigma}")


def joint_noise_multiplier(mechanisms: Sequence[GaussianMechanism]) -> float:
    """σ of the one mechanism that running all of `mechanisms` on the same batch amounts to.

    Args:
        mechanisms: the Gaussian mechanisms applied to one sampled batch; at least one.

    Returns:
        (Σ σᵢ⁻²)^(-1/2); 0.0 when any σᵢ is 0 (that one releases the sum exactly).

    Raises:
        GradleakError: when `mechanisms` is empty.
    """
    if not mechanisms:
        raise GradleakError("a step needs at least one DP mechanism to account for")
    if any(m.noise_multiplier == 0 for m in mechanisms):
        return 0.0
    return sum(m.noise_multiplier**-2 for m in mechanisms) ** -0.5


def dp_epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    """ε of the (ε, δ)-DP guarantee after `steps` DP-SGD steps, by Opacus's RDP accountant.

    `sample_rate` is the probability that a record is in a step's batch, each record drawn
    independently (Poisson sampling, which the analysis assumes). σ = 0 gives no privacy
    (ε = inf); zero steps spend none (ε = 0).

    Args:
        noise_multiplier: σ, the noise standard deviation over the clipping norm; a finite
            number >= 0.
        sample_rate: the probability that a record is in a step's batch, in (0, 1].
        steps: how many DP-SGD steps were taken; an int >= 0.
        delta: the δ of the guarantee, in (0, 1); typically below 1 / dataset size.

    Returns:
        ε as a float: 0.0 for zero steps, inf for σ = 0, else the accountant's value.

    Raises:
        GradleakError: when the opacus package is missing.
        GradleakError: when `noise_multiplier` is not a finite number >= 0.
        GradleakError: when `sample_rate` is not in (0, 1].
        GradleakError: when `steps` is not a non-negative int (a bool included).
        GradleakError: when `delta` is not in (0, 1).
    """
    try:
        from opacus.accountants import RDPAccountant
    except ImportError:
        raise GradleakError(
            "the DP-SGD accountant needs the opacus package; install it with pip"
        ) from None

    _check_sigma(noise_multiplier)
    if not 0 < sample_rate <= 1:
        raise GradleakError(f"sample rate must be in (0, 1], got {sample_rate}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise GradleakError(f"steps must be a non-negative integer, got {steps!r}")
    if not 0 < delta < 1:
        raise GradleakError(f"delta must be in (0, 1), got {delta}")
    if steps == 0:
        return 0.0
    if noise_multiplier == 0:
        return math.inf
    accountant = RDPAccountant()
    # One entry of `steps` identical steps, as accumulated by `steps` calls to .step().
    accountant.history = [(float(noise_multiplier), float(sample_rate), steps)]
    return float(accountant.get_epsilon(delta=delta))


def privacy_spent(
    mechanisms: Sequence[GaussianMechanism], sample_rate: float, steps: int, delta: float
) -> float | None:
    """ε after `steps` steps, each running every one of `mechanisms` on one Poisson batch.

    Args:
        mechanisms: the DP mechanisms applied at every step (a chain's, in any order).
        sample_rate: the probability that a record is in a step's batch, in (0, 1].
        steps: how many steps were taken; an int >= 0.
        delta: the δ of the guarantee, in (0, 1).

    Returns:
        None without mechanisms (no guarantee to state); else ε of one sampled Gaussian
        mechanism of `joint_noise_multiplier(mechanisms)` per step (see the top of this
        module).

    Raises:
        GradleakError: as `dp_epsilon`.
    """
    if not mechanisms:
        return None
    return dp_epsilon(joint_noise_multiplier(mechanisms), sample_rate, steps, delta)
