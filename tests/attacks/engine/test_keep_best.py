"""Adam's best-so-far iterate: each trial returns its lowest-loss iterate, read nowhere in
the loop (no host reads added), and a run that gets worse at the end keeps its best."""

from __future__ import annotations

import pytest
import torch

from gradleak.attacks.engine.adam import optimize_adam
from gradleak.fl import FedSGDClient
from gradleak.scenario import RunConfig, build_case

from .problems import matching_problem
from .test_host_reads import HostCalls

pytestmark = pytest.mark.usefixtures("one_thread")

ITERATIONS = 40


@pytest.fixture(scope="module")
def problem(one_thread: None):
    case = build_case(RunConfig(model="lenet", progress=False))
    update = FedSGDClient(case.server.model).compute_update(case.client.batch)
    # No prior: the loss is the distance the observer is shown, so it sees every loss.
    return matching_problem(case, dict(update.tensors), "cosine", tv=0.0)


def _starts() -> torch.Tensor:
    return torch.randn(3, 1, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _run(problem, *, keep_best: bool, observer=None, log_every: int = 10_000):
    # A large, undecayed signed step: the iterates bounce around, so the last is rarely best.
    return optimize_adam(
        problem,
        _starts(),
        torch.tensor([3]),
        lr=3.0,
        iterations=ITERATIONS,
        lr_decay=False,
        log_every=log_every,
        observer=observer,
        progress=False,
        check_memory=False,
        keep_best=keep_best,
    )


def test_keep_best_returns_each_trials_lowest_loss_iterate(problem) -> None:
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def watch(iteration, losses, inputs):
        seen.append((losses.clone(), inputs.clone()))

    last = _run(problem, keep_best=False, observer=watch, log_every=1)
    # Every iterate the loop stepped from (0..39), then the final one, scored.
    assert len(seen) == ITERATIONS + 1
    losses = torch.stack([loss for loss, _ in seen])  # (iterations + 1) × K
    best_at = losses.argmin(dim=0)
    assert (best_at < ITERATIONS).all()  # the run got worse by its end: the test can fail
    assert (last.losses > losses.min(dim=0).values).all()

    best = _run(problem, keep_best=True)
    for k, at in enumerate(best_at.tolist()):
        assert torch.equal(best.images[k], seen[at][1][k])
        assert float(best.losses[k]) == pytest.approx(float(losses[at, k]), rel=1e-5)
    assert (best.losses < last.losses).all()
    assert best.loss_evaluations == last.loss_evaluations + 3  # the last iterates scored again


def test_keep_best_adds_no_host_reads_per_iteration(problem) -> None:
    def calls(iterations: int):
        counter = HostCalls()
        with counter:
            optimize_adam(
                problem,
                _starts(),
                torch.tensor([3]),
                lr=0.1,
                iterations=iterations,
                log_every=10_000,
                progress=False,
                check_memory=False,
                keep_best=True,
            )
        return counter.calls

    assert calls(8) == calls(32)
