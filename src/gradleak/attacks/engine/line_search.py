"""L-BFGS's line searches along a direction d from a point x, one trial each, as generators.

A line search is a generator: it yields a step size t it wants evaluated at x + t·d and is
sent back a `Probe` (the loss there, the directional derivative ∇f(x + t·d)·d, and an
opaque payload the caller uses to hold the gradient). It returns a `Found`: the step to
take and the probe of x + t·d, or None when x + t·d was not evaluated (the fixed step's
last iteration). Written as generators, the line searches of many trials advance together:
the engine evaluates all pending steps of a stack of trials in one stacked call.

Three searches, by name (`LINE_SEARCHES`):

* "none": the fixed step t (DLG's reference), evaluated only when the caller needs it.
* "strong_wolfe": Nocedal & Wright's Algorithm 3.5 (bracketing) and 3.6 (zoom) with cubic
  interpolation, for a step satisfying the strong Wolfe conditions
  f(x + t·d) ≤ f(x) + c₁·t·∇f(x)·d and |∇f(x + t·d)·d| ≤ c₂·|∇f(x)·d|.
* "unit_first": the step t first, accepted when its loss is finite and below f(x);
  otherwise the strong-Wolfe search from the same point, starting from that evaluation
  (it is not repeated).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

# Sufficient decrease and curvature constants (Nocedal & Wright's choices for quasi-Newton).
C1 = 1e-4
C2 = 0.9
# At most this many evaluations per strong-Wolfe search.
MAX_EVALUATIONS = 25
# The bracket is given up once it is this narrow along d (|Δt|·max|d|), as torch's search.
TOLERANCE_CHANGE = 1e-9
# Extrapolation: the next trial step lies in [t + EXTRA_MIN·(t − t_prev), EXTRA_MAX·t].
EXTRA_MIN = 0.01
EXTRA_MAX = 10.0
# Zoom: an interpolated step this close (relative to the bracket) to an end is moved
# inwards, so the bracket keeps shrinking.
EDGE = 0.1


@dataclass(frozen=True)
class Probe:
    """One evaluation along the direction: step t, loss f, directional derivative gtd.

    Attributes:
        t: the step size.
        f: the loss at x + t·d (may be NaN or infinite).
        gtd: ∇f(x + t·d)·d (NaN where f is not finite).
        payload: what the caller keeps with the evaluation (its gradient).
    """

    t: float
    f: float
    gtd: float
    payload: Any = None


@dataclass(frozen=True)
class Found:
    """A line search's answer: the step to take and its evaluation (None: not evaluated)."""

    t: float
    probe: Probe | None
    evaluations: int


Search = Generator[float, Probe, Found]
# (start probe at t = 0, first step, max|d|, must the step be evaluated?, an evaluation of
# the first step already made) -> the search.
LineSearch = Callable[[Probe, float, float, bool, "Probe | None"], Search]


def fixed_step(
    start: Probe, t: float, d_max: float, evaluate: bool, first: Probe | None = None
) -> Search:
    """The step t as it is; evaluated only when `evaluate` (the caller needs its loss)."""
    if first is not None:
        return Found(t, first, 0)
    if not evaluate:
        return Found(t, None, 0)
    probe = yield t
    return Found(t, probe, 1)


def unit_first(
    start: Probe, t: float, d_max: float, evaluate: bool, first: Probe | None = None
) -> Search:
    """The step t when it lowers the loss to a finite value, else a strong-Wolfe search."""
    probe = first if first is not None else (yield t)
    if math.isfinite(probe.f) and probe.f < start.f:
        return Found(t, probe, 1)
    found = yield from strong_wolfe(start, t, d_max, True, probe)
    return Found(found.t, found.probe, found.evaluations + 1)


def strong_wolfe(
    start: Probe, t: float, d_max: float, evaluate: bool = True, first: Probe | None = None
) -> Search:
    """A step satisfying the strong Wolfe conditions, from `t` (Nocedal & Wright 3.5, 3.6).

    Args:
        start: the evaluation at t = 0 (its loss and ∇f·d, which must be negative).
        t: the first step tried.
        d_max: max|d|, to judge when the bracket is too narrow to matter.
        evaluate: ignored (the search always evaluates its steps).
        first: an evaluation of step `t` already made (it is not repeated and not counted).

    Returns:
        The accepted step and its evaluation; when the evaluations run out, the lowest
        sufficient-decrease point found (the start, t = 0, when there is none).
    """
    evaluations = 0
    prev = start
    while True:
        if first is not None:
            probe, first = first, None
        else:
            if evaluations >= MAX_EVALUATIONS:
                return _best(start, prev, evaluations)
            probe = yield t
            evaluations += 1
        if not _armijo(start, probe) or (prev is not start and probe.f >= prev.f):
            return (yield from _zoom(start, prev, probe, d_max, evaluations))
        if abs(probe.gtd) <= -C2 * start.gtd:
            return Found(probe.t, probe, evaluations)
        if probe.gtd >= 0:
            return (yield from _zoom(start, probe, prev, d_max, evaluations))
        low, high = probe.t + EXTRA_MIN * (probe.t - prev.t), EXTRA_MAX * probe.t
        t = _clamped(_cubic_minimum(prev, probe), low, high, default=high)
        prev = probe


def _zoom(start: Probe, low: Probe, high: Probe, d_max: float, evaluations: int) -> Search:
    """Shrink [low, high] (low: the lower sufficient-decrease end) to a strong-Wolfe step."""
    while evaluations < MAX_EVALUATIONS:
        if abs(high.t - low.t) * d_max < TOLERANCE_CHANGE:
            break
        a, b = sorted((low.t, high.t))
        margin = EDGE * (b - a)
        t = _clamped(_cubic_minimum(low, high), a + margin, b - margin, default=(a + b) / 2)
        probe = yield t
        evaluations += 1
        if not _armijo(start, probe) or probe.f >= low.f:
            high = probe
            continue
        if abs(probe.gtd) <= -C2 * start.gtd:
            return Found(probe.t, probe, evaluations)
        if probe.gtd * (high.t - low.t) >= 0:
            high = low
        low = probe
    return Found(low.t, low, evaluations)


def _armijo(start: Probe, probe: Probe) -> bool:
    """Sufficient decrease (NaN or infinite losses fail it)."""
    return math.isfinite(probe.f) and probe.f <= start.f + C1 * probe.t * start.gtd


def _best(start: Probe, last: Probe, evaluations: int) -> Found:
    """Out of evaluations while extrapolating: the last step if it decreased enough."""
    if last is not start and _armijo(start, last):
        return Found(last.t, last, evaluations)
    return Found(0.0, start, evaluations)


def _cubic_minimum(p: Probe, q: Probe) -> float:
    """The minimiser of the cubic through (t, f, f') at p and q (N&W eq. 3.59); NaN if none."""
    if not all(math.isfinite(v) for v in (p.t, p.f, p.gtd, q.t, q.f, q.gtd)) or p.t == q.t:
        return math.nan
    d1 = p.gtd + q.gtd - 3 * (p.f - q.f) / (p.t - q.t)
    square = d1 * d1 - p.gtd * q.gtd
    if square < 0:
        return math.nan
    d2 = math.copysign(math.sqrt(square), q.t - p.t)
    denominator = q.gtd - p.gtd + 2 * d2
    if denominator == 0:
        return math.nan
    return q.t - (q.t - p.t) * (q.gtd + d2 - d1) / denominator


def _clamped(t: float, low: float, high: float, *, default: float) -> float:
    """`t` within [low, high]; `default` when the interpolation gave no number."""
    if not math.isfinite(t):
        return default
    return min(max(t, low), high)


# The `line_search` option's values and what each one runs.
LINE_SEARCHES: dict[str, LineSearch] = {
    "none": fixed_step,
    "strong_wolfe": strong_wolfe,
    "unit_first": unit_first,
}
