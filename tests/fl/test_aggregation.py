"""Aggregation: the server sees exactly the mean of its users' updates."""

from __future__ import annotations

import pytest
import torch

from gradleak.core import PrivateBatch, SharedUpdate, UpdateKind
from gradleak.core.errors import GradleakError
from gradleak.fl import (
    FedSGDClient,
    LocalTraining,
    ProtocolSettings,
    aggregate,
    simulate,
    split_users,
)
from gradleak.models import build_model

pytestmark = pytest.mark.usefixtures("one_thread")


def _updates(n: int) -> list[SharedUpdate]:
    g = torch.Generator().manual_seed(0)
    return [
        SharedUpdate(
            {"w": torch.randn(3, 4, generator=g), "b": torch.randn(3, generator=g)},
            UpdateKind.GRADIENT,
            {"num_samples": 2},
        )
        for _ in range(n)
    ]


@pytest.mark.parametrize("users", [1, 2, 7, 64])
def test_aggregate_is_the_mean(users: int) -> None:
    updates = _updates(users)
    mean = aggregate(updates)
    for name in ("w", "b"):
        total = sum(u.tensors[name].double() for u in updates)
        torch.testing.assert_close(mean.tensors[name].double(), total / users)
    assert mean.metadata["num_users"] == users
    assert mean.num_samples == 2 * users


def test_aggregate_refuses_mixed_or_empty_input() -> None:
    with pytest.raises(GradleakError, match="at least one update"):
        aggregate([])
    other = SharedUpdate(dict(_updates(1)[0].tensors), UpdateKind.WEIGHT_DELTA)
    with pytest.raises(GradleakError, match="different kinds"):
        aggregate([*_updates(1), other])
    renamed = SharedUpdate({"v": torch.zeros(3, 4), "b": torch.zeros(3)})
    with pytest.raises(GradleakError, match="different models"):
        aggregate([*_updates(1), renamed])


def test_simulated_round_over_users_is_the_mean_of_their_clients() -> None:
    model = build_model("resnet20", num_classes=10, seed=0)
    g = torch.Generator().manual_seed(1)
    batch = PrivateBatch(torch.randn(6, 3, 32, 32, generator=g), torch.arange(6))
    shared = simulate(model, batch, ProtocolSettings("fedsgd", users=3)).update
    # Each user's batch-norm statistics are its own, so this is not the 6-image gradient.
    parts = [FedSGDClient(model).compute_update(b) for b in split_users(batch, 3)]
    for name, tensor in shared.tensors.items():
        expected = torch.stack([p.tensors[name] for p in parts]).mean(dim=0)
        torch.testing.assert_close(tensor, expected)
    assert shared.metadata["num_users"] == 3


def test_users_must_hold_equal_shares() -> None:
    batch = PrivateBatch(torch.zeros(5, 3, 32, 32), torch.zeros(5, dtype=torch.long))
    with pytest.raises(GradleakError, match="5 samples do not split evenly over 2 users"):
        split_users(batch, 2)


def test_second_fedavg_round_starts_from_the_moved_server_model() -> None:
    model = build_model("lenet", num_classes=10, seed=0)
    g = torch.Generator().manual_seed(2)
    batch = PrivateBatch(torch.randn(2, 3, 32, 32, generator=g), torch.tensor([1, 2]))
    settings = ProtocolSettings("fedavg", LocalTraining(lr=0.1, steps=2))
    first = simulate(model, batch, settings).update
    second = simulate(model, batch, ProtocolSettings("fedavg", settings.local, rounds=2))
    for name, p in second.server_model.named_parameters():
        expected = dict(model.named_parameters())[name] + first.tensors[name]
        torch.testing.assert_close(p, expected)
    again = simulate(second.server_model, batch, settings).update
    for name, tensor in second.update.tensors.items():
        torch.testing.assert_close(tensor, again.tensors[name])


def test_several_fedsgd_rounds_are_refused() -> None:
    with pytest.raises(GradleakError, match="use --protocol fedavg or fedadmm"):
        ProtocolSettings("fedsgd", rounds=2)
