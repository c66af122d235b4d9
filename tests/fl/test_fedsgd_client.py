"""FedSGDClient: the shared gradient is exactly ∇θ mean CE on the private batch, by name."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from gradleak.core import PrivateBatch, UpdateKind
from gradleak.fl import FedSGDClient
from gradleak.models import build_model

pytestmark = pytest.mark.usefixtures("one_thread")


def _batch(size: int, classes: int = 10, seed: int = 0) -> PrivateBatch:
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(size, 3, 32, 32, generator=g)
    labels = torch.randint(0, classes, (size,), generator=g)
    return PrivateBatch(images, labels)


def _hand_gradient(model: nn.Module, batch: PrivateBatch, train: bool) -> dict[str, torch.Tensor]:
    """Mean cross-entropy written out (log-softmax at the true class), then autograd."""
    replica = copy.deepcopy(model)
    replica.train(train)
    replica.zero_grad()
    logits = replica(batch.images)
    log_probs = logits - logits.logsumexp(dim=1, keepdim=True)
    loss = -log_probs[torch.arange(len(batch)), batch.labels].sum() / len(batch)
    loss.backward()
    return {name: p.grad.detach().clone() for name, p in replica.named_parameters()}


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: t.detach().clone() for name, t in model.state_dict().items()}


@pytest.mark.parametrize(
    ("model_name", "mode", "size"),
    [("lenet", "train", 3), ("resnet20", "train", 2), ("resnet20", "eval", 2)],
)
def test_update_is_gradient_of_mean_cross_entropy(model_name: str, mode: str, size: int) -> None:
    model = build_model(model_name, num_classes=10, seed=1)
    batch = _batch(size)
    expected = _hand_gradient(model, batch, train=mode == "train")

    update = FedSGDClient(model, model_mode=mode).compute_update(batch)

    assert update.kind is UpdateKind.GRADIENT
    assert update.num_samples == size
    assert update.metadata["protocol"] == "fedsgd"
    assert list(update.tensors) == list(expected)
    for name, grad in expected.items():
        torch.testing.assert_close(update.tensors[name], grad, rtol=1e-4, atol=1e-6)
    # Sanity: the gradient is not trivially zero, so the comparison means something.
    assert any(g.abs().max() > 1e-4 for g in expected.values())


def test_train_and_eval_mode_updates_differ_on_batch_norm_model() -> None:
    model = build_model("resnet20", num_classes=10, seed=1)
    batch = _batch(2)
    train = FedSGDClient(model, model_mode="train").compute_update(batch)
    evaluation = FedSGDClient(model, model_mode="eval").compute_update(batch)
    assert list(train.tensors) == list(evaluation.tensors)
    assert not torch.allclose(train.tensors["conv1.weight"], evaluation.tensors["conv1.weight"])


def test_update_names_are_the_models_parameter_names() -> None:
    model = build_model("resnet20", num_classes=10, seed=0)
    update = FedSGDClient(model).compute_update(_batch(2))
    names = [name for name, _ in model.named_parameters()]
    assert list(update.tensors) == names
    assert all(isinstance(name, str) and not name.isdigit() for name in update.tensors)
    for name, parameter in model.named_parameters():
        assert update.tensors[name].shape == parameter.shape
    update.validate_for(model)


def test_server_model_is_not_mutated_by_train_mode_update() -> None:
    model = build_model("resnet20", num_classes=10, seed=0)
    model.eval()  # the server's own mode must survive the client's train-mode pass
    before = _state(model)
    grads_before = [p.grad for p in model.parameters()]

    client = FedSGDClient(model, model_mode="train")
    client.compute_update(_batch(4))
    client.compute_update(_batch(4, seed=1))

    after = _state(model)
    assert after.keys() == before.keys()
    for name, value in before.items():
        assert torch.equal(after[name], value), name
    assert not model.training
    assert [p.grad for p in model.parameters()] == grads_before  # all None: no backward on it
    # The client's own copy did run in train mode: its running statistics moved.
    client_state = client.model.state_dict()
    assert not torch.equal(client_state["bn1.running_mean"], before["bn1.running_mean"])
    assert int(client_state["bn1.num_batches_tracked"]) == 2


def test_client_leaves_the_private_batch_untouched() -> None:
    model = build_model("lenet", num_classes=10, seed=0)
    batch = _batch(2)
    images, labels = batch.images.clone(), batch.labels.clone()
    FedSGDClient(model).compute_update(batch)
    assert torch.equal(batch.images, images)
    assert torch.equal(batch.labels, labels)
    assert len(batch) == 2
