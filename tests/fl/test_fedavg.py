"""FedAvg client: local SGD on the private samples, shared as θ_local − θ_server."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.nn import functional as F

from gradleak.core import PrivateBatch, UpdateKind
from gradleak.core.errors import GradleakError
from gradleak.fl import FedAvgClient, FedSGDClient, LocalTraining
from gradleak.models import build_model

pytestmark = pytest.mark.usefixtures("one_thread")


def _batch(size: int, seed: int = 0) -> PrivateBatch:
    g = torch.Generator().manual_seed(seed)
    return PrivateBatch(torch.randn(size, 3, 32, 32, generator=g), torch.arange(size) % 10)


@pytest.mark.parametrize(("model_name", "mode"), [("lenet", "train"), ("resnet20", "eval")])
def test_one_full_batch_step_is_minus_lr_times_the_fedsgd_gradient(
    model_name: str, mode: str
) -> None:
    model = build_model(model_name, num_classes=10, seed=2)
    batch = _batch(3)
    lr = 0.05
    gradient = FedSGDClient(model, model_mode=mode).compute_update(batch)
    delta = FedAvgClient(model, LocalTraining(lr=lr, steps=1), model_mode=mode).compute_update(
        batch
    )
    assert delta.kind is UpdateKind.WEIGHT_DELTA
    assert delta.num_samples == 3
    for name, g in gradient.tensors.items():
        torch.testing.assert_close(delta.tensors[name], -lr * g, rtol=1e-5, atol=1e-7)


def _reference_local_sgd(model, batch, lr, order):  # noqa: ANN001, ANN202
    """torch.optim.SGD over the given sample slices: the textbook local training."""
    replica = copy.deepcopy(model)
    replica.train()
    optimiser = torch.optim.SGD(replica.parameters(), lr=lr)
    for rows in order:
        optimiser.zero_grad()
        F.cross_entropy(replica(batch.images[rows]), batch.labels[rows]).backward()
        optimiser.step()
    before = dict(model.named_parameters())
    return {n: p.detach() - before[n].detach() for n, p in replica.named_parameters()}


def test_mini_batches_cycle_through_the_samples_in_order() -> None:
    model = build_model("lenet", num_classes=10, seed=3)
    batch = _batch(5)
    local = LocalTraining(lr=0.1, epochs=2, batch_size=2)
    order = [slice(0, 2), slice(2, 4), slice(4, 5)] * 2
    assert local.step_slices(5) == order
    expected = _reference_local_sgd(model, batch, 0.1, order)
    delta = FedAvgClient(model, local).compute_update(batch)
    for name, value in expected.items():
        torch.testing.assert_close(delta.tensors[name], value, rtol=1e-5, atol=1e-6)


def test_local_steps_wrap_around_the_data() -> None:
    local = LocalTraining(lr=0.1, steps=4, batch_size=2)
    assert local.step_slices(3) == [slice(0, 2), slice(2, 3), slice(0, 2), slice(2, 3)]
    assert LocalTraining(lr=0.1).step_slices(3) == [slice(0, 3)]


def test_server_model_is_left_untouched_and_buffers_shared_on_request() -> None:
    model = build_model("resnet20", num_classes=10, seed=1)
    before = {n: t.clone() for n, t in model.state_dict().items()}
    client = FedAvgClient(model, LocalTraining(lr=0.1, steps=2), share_buffers=True)
    update = client.compute_update(_batch(2))
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    assert set(update.buffers) == {n for n, _ in model.named_buffers()}
    moved = update.buffers["bn1.running_mean"]  # train mode moved the statistics
    assert not torch.equal(moved, before["bn1.running_mean"])
    assert not FedAvgClient(model, LocalTraining(lr=0.1)).compute_update(_batch(2)).buffers


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": 0.0}, "local learning rate must be positive"),
        ({"lr": 0.1, "steps": 2, "epochs": 1}, "not both"),
        ({"lr": 0.1, "steps": 0}, "local steps must be at least 1"),
        ({"lr": 0.1, "batch_size": 0}, "local batch size must be at least 1"),
    ],
)
def test_bad_local_training_is_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(GradleakError, match=message):
        LocalTraining(**kwargs)


def test_local_batch_larger_than_the_samples_is_refused() -> None:
    with pytest.raises(GradleakError, match="local batch size 4 is larger than the client's 2"):
        LocalTraining(lr=0.1, batch_size=4).step_slices(2)
