"""Stacked L-BFGS: trials as independent as alone, per-trial line searches, memory groups."""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
import torch

import gradleak.attacks.gradient_matching as gradient_matching
from gradleak import attacks
from gradleak.attacks.engine import lbfgs, memory
from gradleak.attacks.engine.curvature import CurvatureHistory
from gradleak.attacks.engine.hooks import StopAttack
from gradleak.attacks.engine.lbfgs import optimize_lbfgs
from gradleak.attacks.engine.line_search import C1, C2, Probe, strong_wolfe, unit_first
from gradleak.attacks.engine.memory import run_in_groups, trial_groups
from gradleak.attacks.engine.trials import TrialsResult, trial_inputs
from gradleak.attacks.matching.objectives import get_objective
from gradleak.attacks.matching.problem import MatchingProblem, attacker_model
from gradleak.core.errors import GradleakError
from gradleak.fl import FedSGDClient
from gradleak.modalities.image import total_variation
from gradleak.scenario import RunConfig, build_case

from .problems import matching_problem

pytestmark = pytest.mark.usefixtures("one_thread")


# --- the line searches, on one-dimensional functions ----------------------------------------


def _search(search: Any, phi: Callable[[float], tuple[float, float]], t: float) -> tuple:
    """Run a line search on φ(t) = f(x + t·d); return its answer and the steps it tried."""
    f0, g0 = phi(0.0)
    tried: list[float] = []
    generator = search(Probe(0.0, f0, g0), t, 1.0, True, None)
    try:
        step = next(generator)
        while True:
            tried.append(step)
            f, g = phi(step)
            step = generator.send(Probe(step, f, g))
    except StopIteration as done:
        return done.value, tried


def _quadratic(c: float, x0: float) -> Callable[[float], tuple[float, float]]:
    """φ(t) = c/2·(x0 − t·c·x0)²: the steepest descent line of c/2·x², optimal at t = 1/c."""
    d = -c * x0

    def phi(t: float) -> tuple[float, float]:
        x = x0 + t * d
        return 0.5 * c * x * x, c * x * d

    return phi


def _quartic(t: float) -> tuple[float, float]:
    """φ(t) = (t − 0.3)⁴ + (t − 0.3)² − slope: a minimum at 0.3, far from the unit step."""
    u = t - 0.3
    return u**4 + u**2, 4 * u**3 + 2 * u


def test_unit_first_takes_the_unit_step_where_it_is_optimal() -> None:
    # On c/2·x² along −∇f scaled by 1/c (what L-BFGS's secant scaling gives a quadratic),
    # the unit step lands on the minimum: one evaluation, no search.
    phi = _quadratic(1.0, 3.0)
    found, tried = _search(unit_first, phi, 1.0)
    assert tried == [1.0]
    assert found.t == 1.0 and found.evaluations == 1
    assert found.probe.f == 0.0


def test_unit_first_falls_back_to_strong_wolfe_when_the_step_does_not_decrease() -> None:
    phi = _quadratic(4.0, 1.0)  # optimal at t = 0.25; t = 1 overshoots to 9× the start
    found, tried = _search(unit_first, phi, 1.0)
    assert tried[0] == 1.0 and len(tried) > 1  # the unit step, then the search
    assert tried.count(1.0) == 1  # the search starts from that evaluation, not repeating it
    assert found.evaluations == len(tried)
    f0, g0 = phi(0.0)
    assert found.probe.f <= f0 + C1 * found.t * g0
    assert abs(found.probe.gtd) <= -C2 * g0


@pytest.mark.parametrize(
    ("phi", "t"),
    [
        (_quadratic(4.0, 1.0), 1.0),  # too long: zoom
        (_quadratic(0.01, 1.0), 1.0),  # too short: extrapolate
        (_quartic, 1.0),
        (_quartic, 1e-3),
        (lambda t: (math.exp(-t) + 0.1 * t * t, -math.exp(-t) + 0.2 * t), 50.0),
    ],
    ids=["zoom", "extrapolate", "quartic-long", "quartic-short", "exponential"],
)
def test_strong_wolfe_conditions_hold_at_the_accepted_step(phi: Any, t: float) -> None:
    found, tried = _search(strong_wolfe, phi, t)
    f0, g0 = phi(0.0)
    assert found.t > 0 and found.t in tried
    assert found.probe.f <= f0 + C1 * found.t * g0  # sufficient decrease
    assert abs(found.probe.gtd) <= -C2 * g0  # strong curvature condition


def test_strong_wolfe_treats_a_non_finite_loss_as_too_long() -> None:
    def phi(t: float) -> tuple[float, float]:
        return (math.nan, math.nan) if t > 2 else _quadratic(1.0, 1.0)(t)

    found, tried = _search(strong_wolfe, phi, 10.0)
    assert tried[0] == 10.0
    assert math.isfinite(found.probe.f) and found.probe.f < phi(0.0)[0]


# --- the stack on a problem whose trials differ, evaluated by a stand-in step -----------------


class _BowlStep:
    """A stand-in for TrialStep: trial k (told apart by its prior weight w_k) minimises
    ½‖x‖² when w_k = 0, else w_k·√(1 + ‖x‖²), whose curvature grows toward its minimum (so a
    secant-scaled unit step from far out overshoots). It records every stacked call.
    """

    calls: list[tuple[list[float], list[float]]] = []

    def __init__(self, problem: Any, *, compile: bool = False, notice: Any = None) -> None:
        self.compile = False
        self.compile_seconds = 0.0
        self.compiled = False

    def __call__(self, images: torch.Tensor, inputs: Any) -> tuple:
        w = inputs.tv_weight
        squared = images.flatten(1).pow(2).sum(1)
        root = (1 + squared).sqrt()
        values = torch.where(w == 0, 0.5 * squared, w * root)
        scale = torch.where(w == 0, torch.ones_like(w), w / root)
        grads = images * scale.reshape(-1, *[1] * (images.dim() - 1))
        _BowlStep.calls.append((w.tolist(), values.tolist()))
        return grads, None, values, values.clone()


def _bowl_value(x: torch.Tensor, w: float) -> float:
    squared = float(x.pow(2).sum())
    return 0.5 * squared if w == 0 else w * math.sqrt(1 + squared)


def _stand_in_problem() -> Any:
    return SimpleNamespace(device=torch.device("cpu"), tv_weight=0.0, target={})


def test_each_trial_runs_its_own_line_search(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lbfgs, "TrialStep", _BowlStep)
    _BowlStep.calls = []
    images = torch.full((2, 1, 1, 2, 2), 0.5)
    images[1] = 3.0
    result = optimize_lbfgs(
        _stand_in_problem(),
        images,
        torch.zeros(1, dtype=torch.long),
        steps=1,
        inner_iterations=6,
        line_search="unit_first",
        tv_weights=[0.0, 1.0],
        progress=False,
    )

    losses = {
        w: [v for ws, vs in _BowlStep.calls for x, v in zip(ws, vs, strict=True) if x == w]
        for w in (0, 1)
    }
    # Trial 0, a quadratic: its start, the scaled first step, then the unit step lands on the
    # minimum (its gradient is zero there, so it stops): three evaluations, no search.
    assert losses[0] == [0.5, 0.125, 0.0]
    assert result.losses[0].item() == 0.0
    # Trial 1: a unit step raised its loss, so it searched: some evaluations were rejected.
    rejected = [b for a, b in zip(losses[1], losses[1][1:], strict=False) if b > a]
    assert rejected and max(rejected) > losses[1][0]
    assert result.losses[1].item() == pytest.approx(1.0, abs=1e-3)  # √1: its minimum
    assert result.loss_evaluations == len(losses[0]) + len(losses[1])
    # One stacked call per evaluation: both trials while trial 0 ran, then trial 1 alone.
    assert [ws for ws, _ in _BowlStep.calls] == [[0.0, 1.0]] * 3 + [[1.0]] * (len(losses[1]) - 3)


def test_ctrl_c_in_a_stacked_evaluation_keeps_every_trials_best(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Interrupting(_BowlStep):
        def __call__(self, images: torch.Tensor, inputs: Any) -> tuple:
            if len(_BowlStep.calls) == 4:
                raise KeyboardInterrupt
            return super().__call__(images, inputs)

    monkeypatch.setattr(lbfgs, "TrialStep", Interrupting)
    _BowlStep.calls = []
    images = torch.full((3, 1, 1, 2, 2), 2.0)
    result = optimize_lbfgs(
        _stand_in_problem(),
        images,
        torch.zeros(1, dtype=torch.long),
        steps=5,
        line_search="strong_wolfe",
        tv_weights=[1.0, 2.0, 3.0],
        progress=False,
    )
    assert result.interrupted and not result.stopped
    assert result.images.shape == images.shape
    for k, w in enumerate((1.0, 2.0, 3.0)):
        start = _bowl_value(images[k], w)
        assert result.losses[k].item() < start  # its best iterate, not its start
        assert result.losses[k].item() == pytest.approx(_bowl_value(result.images[k], w))


# --- stacked trials equal trials alone (LeNet, float64) -----------------------------------


@pytest.fixture(scope="module")
def double_problem(one_thread: None) -> Any:
    """Three CIFAR images' updates on a float64 LeNet, and a problem matching the first."""
    cases = [build_case(RunConfig(model="lenet", indices=(i,), progress=False)) for i in (0, 3, 5)]
    model = copy.deepcopy(cases[0].server.model).double()
    updates = []
    for case in cases:
        batch = dataclasses.replace(case.client.batch, images=case.client.batch.images.double())
        updates.append(dict(FedSGDClient(model).compute_update(batch).tensors))
    problem = MatchingProblem(
        attacker_model(model, "train"),
        {n: t.double() for n, t in updates[0].items()},
        get_objective("l2"),
        0.0,
        prior=total_variation,
    )
    targets = {n: torch.stack([u[n] for u in updates]).double() for n in problem.names}
    labels = torch.stack([case.client.batch.labels for case in cases])
    return problem, targets, labels


@pytest.mark.parametrize("search", ["none", "strong_wolfe", "unit_first"])
@pytest.mark.parametrize("soft", [False, True], ids=["integer-labels", "soft-labels"])
def test_stacked_trials_equal_each_trial_alone(
    double_problem: Any, search: str, soft: bool
) -> None:
    problem, targets, labels = double_problem
    g = torch.Generator().manual_seed(0)
    images = torch.randn(3, 1, 3, 32, 32, generator=g, dtype=torch.float64)
    if soft:
        labels = torch.randn(3, 1, 10, generator=g, dtype=torch.float64)
    options: dict[str, Any] = {
        "steps": 2,
        "inner_iterations": 5,
        "line_search": search,
        "progress": False,
        "log_every": 1,
    }
    together = optimize_lbfgs(problem, images, labels, targets=targets, **options)
    for k in range(3):
        alone = optimize_lbfgs(
            problem,
            images[k : k + 1],
            labels[k : k + 1] if soft else labels[k],  # 1×B×classes, or B integers
            targets={n: t[k : k + 1] for n, t in targets.items()},
            **options,
        )
        # The stacked step (vmap) and a trial's own (autograd) differ by float64 rounding,
        # ~1e-16 relative; ten L-BFGS iterations amplify it by far less than 1e8.
        torch.testing.assert_close(together.images[k], alone.images[0], rtol=0, atol=1e-8)
        assert together.losses[k].item() == pytest.approx(alone.losses[0].item(), rel=1e-8)
        assert together.labels[k].tolist() == alone.labels[0].tolist()
        assert together.trial_iterations[k] == alone.trial_iterations[0]
    # Each trial matched its own update: the trials ended in different places.
    assert len({round(v, 6) for v in together.losses.tolist()}) == 3


def test_a_trial_that_diverges_keeps_its_best_iterate_while_the_others_go_on(
    lenet_case: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    case, target = lenet_case
    problem = matching_problem(case, target, "l2")
    images = torch.randn(2, 1, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    labels = case.client.batch.labels
    seen: dict[float, list[float]] = {0.0: [], 1e-9: []}
    original = lbfgs.TrialStep.__call__

    def recording(self: Any, images: torch.Tensor, inputs: Any) -> Any:
        out = original(self, images, inputs)
        for w, loss in zip(inputs.tv_weight.tolist(), out[2].tolist(), strict=True):
            seen[min(seen, key=lambda key: abs(key - w))].append(loss)
        return out

    monkeypatch.setattr(lbfgs.TrialStep, "__call__", recording)
    # A huge fixed step overshoots: later iterates are worse than the best one.
    result = optimize_lbfgs(
        problem,
        images,
        labels,
        lr=100.0,
        steps=3,
        inner_iterations=5,
        tv_weights=[0.0, 1e-9],
        log_every=1,
        progress=False,
    )
    for k, w in enumerate((0.0, 1e-9)):
        finite = [v for v in seen[w] if math.isfinite(v)]
        assert not seen[w][-1] <= min(finite)  # precondition: the last is not the best
        assert result.losses[k].item() == pytest.approx(min(finite))
        recomputed = problem.loss(result.images[k], labels).item()
        assert recomputed == pytest.approx(min(finite), rel=1e-4, abs=1e-6)
    assert result.loss_evaluations == sum(len(v) for v in seen.values())


def test_stop_attack_ends_every_stacked_trial(lenet_case: Any) -> None:
    case, target = lenet_case
    problem = matching_problem(case, target, "l2")
    images = torch.randn(3, 1, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    calls: list[int] = []

    def observer(iteration: int, losses: torch.Tensor, inputs: torch.Tensor) -> None:
        calls.append(iteration)
        if len(calls) == 4:
            raise StopAttack("enough", {"psnr": 1.0})

    result = optimize_lbfgs(
        problem,
        images,
        case.client.batch.labels,
        steps=20,
        inner_iterations=2,
        line_search="unit_first",
        log_every=1,
        observer=observer,
        progress=False,
    )
    assert result.stopped and len(calls) == 4  # never called after it stopped the run
    assert result.images.shape == images.shape
    assert max(result.trial_iterations) <= 2
    assert torch.isfinite(result.losses).all()


# --- memory: groups of trials ---------------------------------------------------------------


def test_trial_groups_split_evenly_and_refuse_only_what_cannot_run(
    lenet_case: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    case, target = lenet_case
    problem = matching_problem(case, target, "l2")
    images = torch.zeros(1, 1, 3, 32, 32)
    inputs = trial_inputs(images, case.client.batch.labels, problem, None, None)
    gib = memory.GIB
    monkeypatch.setattr(memory, "step_bytes", lambda *a: gib)  # 1.5 GiB a trial, with SAFETY
    told: list[str] = []

    def groups(free: float, trials: int, **kw: Any) -> list[range]:
        monkeypatch.setattr(memory, "available_bytes", lambda device: int(free * gib))
        return trial_groups(problem, images, inputs, trials, notice=told.append, **kw)

    assert groups(100, 16) == [range(16)] and told == []
    assert groups(6.1, 16) == [range(0, 4), range(4, 8), range(8, 12), range(12, 16)]
    assert told == ["16 trials do not fit in 6.1 GiB free; running them in 4 groups of 4"]
    assert groups(7.6, 10) == [range(0, 5), range(5, 10)]  # 5 fit: two groups of 5
    assert groups(9.1, 16, multiple=4) == [range(0, 4), range(4, 8), range(8, 12), range(12, 16)]
    with pytest.raises(GradleakError, match="one trial would need about 1.5 GiB"):
        groups(1.4, 3)
    with pytest.raises(GradleakError, match="10000000 trials would need about .* use fewer"):
        groups(1.4, 10_000_000)


@pytest.mark.parametrize(
    ("preset", "options"),
    [
        ("dlg", {"iterations": 2, "lbfgs_inner_iterations": 3, "restarts": 5}),
        ("ig", {"iterations": 8, "restarts": 5, "label_strategy": "optimize"}),
    ],
)
def test_a_stack_that_does_not_fit_runs_in_groups_with_the_same_result(
    dlg_update: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    preset: str,
    options: dict,
) -> None:
    case, update = dlg_update
    attack = attacks.get(preset).with_options({**options, "lbfgs_max_hours": 0})
    model, knowledge = case.server.model, case.server.knowledge
    one = attack.reconstruct(update, model, knowledge, seed=3, progress=False)
    assert "groups" not in capsys.readouterr().err

    # Only two of the five trials fit at once: groups of 2, 2 and 1.
    monkeypatch.setattr(memory, "step_bytes", lambda *a: memory.GIB)
    monkeypatch.setattr(memory, "available_bytes", lambda device: int(3.5 * memory.GIB))
    calls: list[int] = []
    optimize = gradient_matching.GradientMatchingAttack._optimize

    def counting(self: Any, problem: Any, images: torch.Tensor, *args: Any) -> TrialsResult:
        calls.append(images.shape[0])
        return optimize(self, problem, images, *args)

    monkeypatch.setattr(gradient_matching.GradientMatchingAttack, "_optimize", counting)
    grouped = attack.reconstruct(update, model, knowledge, seed=3, progress=False)
    err = capsys.readouterr().err
    assert calls == [2, 2, 1]
    assert err.count("running them in 3 groups of 2") == 1
    # Trials are independent: the groups give each trial what one stack gives it, up to
    # the float32 rounding of stacks of other sizes.
    torch.testing.assert_close(grouped.images, one.images, rtol=1e-3, atol=1e-4)
    assert grouped.trial_losses == pytest.approx(one.trial_losses, rel=1e-3, abs=1e-6)
    assert grouped.trial_status == one.trial_status


def test_a_run_joined_from_groups_stops_at_an_interrupted_group() -> None:
    def part(group: range) -> TrialsResult:
        n = len(group)
        return TrialsResult(
            torch.zeros(n, 1),
            torch.zeros(n, 1, dtype=torch.long),
            torch.arange(group.start, group.stop, dtype=torch.float32),
            [{"iteration": 1, "trial": 0}],
            iterations=2,
            loss_evaluations=n,
            interrupted=group.start == 2,
            trial_iterations=[2] * n,
            distances=torch.zeros(n),
        )

    joined = run_in_groups([range(0, 2), range(2, 4), range(4, 5)], part)
    assert joined.losses.tolist() == [0.0, 1.0, 2.0, 3.0]  # the third group never ran
    assert joined.interrupted and joined.loss_evaluations == 4
    assert [row["trial"] for row in joined.history] == [0, 2]  # indices in the whole stack


def test_ctrl_c_between_groups_keeps_the_groups_that_finished() -> None:
    def part(group: range) -> TrialsResult:
        if group.start == 2:  # Ctrl-C in the second group's set-up, before it optimises
            raise KeyboardInterrupt
        n = len(group)
        return TrialsResult(
            torch.zeros(n, 1),
            torch.zeros(n, 1, dtype=torch.long),
            torch.arange(group.start, group.stop, dtype=torch.float32),
            loss_evaluations=5 * n,
            trial_iterations=[2] * n,
            trial_evaluations=[5] * n,
            distances=torch.zeros(n),
            compile_report={"mode": "auto", "cache_hits": 1, "cache_misses": 0},
        )

    joined = run_in_groups([range(0, 2), range(2, 4)], part)
    assert joined.losses.tolist() == [0.0, 1.0] and joined.interrupted
    assert joined.trial_evaluations == [5, 5]
    assert joined.compile_report == {"mode": "auto", "cache_hits": 1, "cache_misses": 0}
    with pytest.raises(KeyboardInterrupt):  # nothing finished: nothing to keep
        run_in_groups([range(2, 4), range(4, 5)], part)


def test_joined_groups_sum_their_compile_cache_counts() -> None:
    def part(group: range) -> TrialsResult:
        n = len(group)
        return TrialsResult(
            torch.zeros(n, 1),
            torch.zeros(n, 1, dtype=torch.long),
            torch.zeros(n),
            trial_iterations=[1] * n,
            distances=torch.zeros(n),
            compile_report={"mode": "on", "cache_hits": group.start, "cache_misses": 1},
        )

    joined = run_in_groups([range(0, 1), range(1, 3), range(3, 4)], part)
    assert joined.compile_report == {"mode": "on", "cache_hits": 4, "cache_misses": 3}


@pytest.fixture(scope="module")
def dlg_update(one_thread: None) -> Any:
    case = build_case(RunConfig(model="lenet", indices=(0,), progress=False))
    update = FedSGDClient(case.server.model).compute_update(case.client.batch)
    return case, update


# --- the curvature history ------------------------------------------------------------------


def _bfgs_inverse(pairs: list[tuple[torch.Tensor, torch.Tensor]], n: int) -> torch.Tensor:
    """The L-BFGS inverse Hessian by its definition: BFGS updates of γI, oldest pair first."""
    s_new, y_new = pairs[-1]
    h = float(s_new @ y_new) / float(y_new @ y_new) * torch.eye(n, dtype=torch.float64)
    for s, y in pairs:
        rho = 1 / float(y @ s)
        left = torch.eye(n, dtype=torch.float64) - rho * torch.outer(s, y)
        h = left @ h @ left.T + rho * torch.outer(s, s)
    return h


def test_directions_are_the_l_bfgs_inverse_hessian_of_each_trials_own_pairs() -> None:
    torch.manual_seed(0)
    n, size = 6, 3
    matrix = torch.randn(n, n, dtype=torch.float64)
    matrix = matrix @ matrix.T + n * torch.eye(n, dtype=torch.float64)
    history = CurvatureHistory(3, size, torch.zeros(n, dtype=torch.float64))
    pairs: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[], [], []]
    for trial, pushes in enumerate((2, 5, 0)):  # trial 1 wraps its ring; trial 2 has none
        history.reset(trial)
        for _ in range(pushes):
            s = torch.randn(n, dtype=torch.float64)
            history.push(trial, s, matrix @ s)
            pairs[trial] = (pairs[trial] + [(s, matrix @ s)])[-size:]
    grads = torch.randn(3, n, dtype=torch.float64)
    directions = history.directions([0, 1, 2], grads)
    for trial in (0, 1):
        expected = -_bfgs_inverse(pairs[trial], n) @ grads[trial]
        torch.testing.assert_close(directions[trial], expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(directions[2], -grads[2])  # no pairs: steepest descent
    # A trial asking alone gets what it gets among others.
    torch.testing.assert_close(history.directions([1], grads[1:2])[0], directions[1])
