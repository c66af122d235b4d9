"""Attacking several updates at once gives what attacking each alone gives."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from gradleak import attacks
from gradleak.fl import FedSGDClient
from gradleak.scenario import RunConfig, build_case

pytestmark = pytest.mark.usefixtures("one_thread")


def _cases(labels_known: bool) -> list[Any]:
    return [
        build_case(RunConfig(model="lenet", indices=(i,), labels_known=labels_known))
        for i in (0, 3, 5)
    ]


@pytest.mark.parametrize(
    ("preset", "options", "labels_known"),
    [
        ("ig", {"iterations": 6, "restarts": 2}, True),  # stacked, integer labels
        ("ig", {"iterations": 6, "restarts": 2, "label_strategy": "optimize"}, False),  # soft
        # L-BFGS, stacked as Adam. Few iterations: L-BFGS amplifies the rounding difference
        # between the stacked step and a trial's own (see test_lbfgs_stack.py, in float64).
        ("idlg", {"iterations": 2, "lbfgs_inner_iterations": 3}, False),
    ],
)
def test_many_updates_equal_one_by_one(preset: str, options: dict, labels_known: bool) -> None:
    cases = _cases(labels_known)
    updates = [FedSGDClient(c.server.model).compute_update(c.client.batch) for c in cases]
    attack = attacks.get(preset).with_options(options)
    model, knowledge = cases[0].server.model, cases[0].server.knowledge

    together = attack.reconstruct_many(updates, model, knowledge, seed=7, progress=False)
    alone = [attack.reconstruct(u, model, knowledge, seed=7, progress=False) for u in updates]

    assert len(together) == len(updates)
    for many, one in zip(together, alone, strict=True):
        torch.testing.assert_close(many.images, one.images, atol=1e-4, rtol=1e-4)
        assert torch.equal(many.labels, one.labels)
        assert many.loss == pytest.approx(one.loss, rel=1e-3, abs=1e-6)
        assert many.trial_losses == pytest.approx(one.trial_losses, rel=1e-3, abs=1e-6)
        assert many.best_trial == one.best_trial
        assert many.iterations == one.iterations
        # Each update counts its own trials' evaluations (L-BFGS: per trial, not per step).
        assert many.loss_evaluations == one.loss_evaluations
    # Different private images give different reconstructions: no trial saw another's target.
    assert not torch.allclose(together[0].images, together[1].images)


def test_no_updates_give_no_reconstructions() -> None:
    case = _cases(True)[0]
    attack = attacks.get("ig")
    assert attack.reconstruct_many([], case.server.model, case.server.knowledge) == []
