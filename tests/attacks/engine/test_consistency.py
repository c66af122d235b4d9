"""Group consistency: registered means and the pull of a group's trials toward theirs."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from gradleak import attacks
from gradleak.attacks.engine.adam import optimize_adam
from gradleak.attacks.engine.consistency import GroupConsistency, registered_mean, spread
from gradleak.core.errors import GradleakError

from .problems import matching_problem

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_registered_mean_undoes_each_trials_sample_order() -> None:
    g = torch.Generator().manual_seed(0)
    batch = torch.randn(4, 3, 5, 5, generator=g)
    offset = 0.01 * torch.randn(4, 3, 5, 5, generator=g)
    order1, order2 = torch.tensor([2, 0, 3, 1]), torch.tensor([1, 3, 0, 2])
    group = torch.stack([batch, batch[order1] + offset[order1], batch[order2] - offset[order2]])
    anchors = registered_mean(group, None)
    # The offsets cancel once the samples are matched: the mean is the batch itself,
    # handed back to every trial in that trial's own order.
    torch.testing.assert_close(anchors[0], batch)
    torch.testing.assert_close(anchors[1], batch[order1])
    torch.testing.assert_close(anchors[2], batch[order2])


def test_samples_with_different_fixed_labels_are_never_matched() -> None:
    a, b = torch.zeros(1, 2, 2), torch.ones(1, 2, 2)
    group = torch.stack([torch.cat([a, b]), torch.cat([a, b])])  # 2 trials × 2 samples
    labels = torch.tensor([[0, 1], [1, 0]])  # trial 1's sample 0 carries label 1
    anchors = registered_mean(group, labels)
    # Trial 1's sample 0 (zeros, label 1) is matched with trial 0's sample 1 (ones, label 1).
    torch.testing.assert_close(anchors[1, 0], torch.full((2, 2), 0.5))
    torch.testing.assert_close(anchors[0, 0], torch.full((2, 2), 0.5))


def test_group_consistency_pulls_the_trials_together(lenet_case: Any) -> None:
    case, target = lenet_case
    problem = matching_problem(case, target, "cosine")
    g = torch.Generator().manual_seed(3)
    start = torch.randn(4, 1, *case.server.knowledge.data_shape, generator=g)
    labels = case.client.batch.labels
    common = {"lr": 0.1, "iterations": 40, "log_every": 10, "progress": False}
    alone = optimize_adam(problem, start, labels, **common)
    pulled = optimize_adam(
        problem,
        start,
        labels,
        consistency=GroupConsistency(group_size=4, weight=5.0, every=5),
        **common,
    )
    before, apart, together = (float(spread(x, 4)[0]) for x in (start, alone.images, pulled.images))
    assert together < 0.5 * apart
    assert together < before


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"group_consistency": 1, "restarts": 1}, "at least 2 seeds"),
        ({"group_consistency": 4, "restarts": 2}, "needs restarts 4, got 2"),
        ({"group_consistency": 2, "restarts": 2, "optimizer": "lbfgs"}, "needs the Adam optimiser"),
        ({"group_consistency": 2, "restarts": 2, "group_weight": 0}, "group_weight"),
    ],
)
def test_bad_group_consistency_settings_are_refused(options: dict, message: str) -> None:
    with pytest.raises(GradleakError, match=message):
        attacks.get("ig").with_options(options)


def test_a_diverged_trial_does_not_pull_its_group(lenet_case: Any) -> None:
    case, target = lenet_case
    problem = matching_problem(case, target, "cosine")
    g = torch.Generator().manual_seed(4)
    start = torch.randn(3, 1, *case.server.knowledge.data_shape, generator=g)
    start[0] = torch.nan  # this trial has diverged from the start
    result = optimize_adam(
        problem,
        start,
        case.client.batch.labels,
        lr=0.1,
        iterations=12,
        log_every=4,
        progress=False,
        consistency=GroupConsistency(group_size=3, weight=1.0, every=5),
    )
    assert result.trial_iterations[1:] == [12, 12]  # the healthy trials ran their budget
    assert torch.isfinite(result.images[1:]).all()
