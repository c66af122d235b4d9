"""The shared SGD loop: seeded batches, the step transform, and what an epoch measures."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gradleak.core.batch import PrivateBatch
from gradleak.core.update import SharedUpdate, UpdateKind
from gradleak.models import build_model
from gradleak.training.sgd import EpochStats, StepTransform, accuracy, sgd_epochs

pytestmark = pytest.mark.usefixtures("one_thread")


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    """Seven random 1×28×28 images with labels 0..2: the last batch of 3 holds one image."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(7, 1, 28, 28, generator=generator)
    return images, torch.tensor([0, 1, 2, 0, 1, 2, 0])


def _model() -> nn.Module:
    return build_model("lenet", num_classes=3, in_channels=1, image_size=(28, 28), seed=3)


def _train(
    model: nn.Module, transform: StepTransform | None = None, epochs: int = 2
) -> list[EpochStats]:
    images, labels = _data()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    return list(
        sgd_epochs(
            model,
            optimizer,
            images,
            labels,
            epochs=epochs,
            batch_size=3,
            seed=0,
            transform=transform,
        )
    )


def _states_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_zero_gradient_leaves_the_model_unchanged() -> None:
    def zero(update: SharedUpdate, batch: PrivateBatch) -> SharedUpdate:
        tensors = {n: torch.zeros_like(t) for n, t in update.tensors.items()}
        return SharedUpdate(tensors, update.kind, update.metadata)

    model = _model()
    stats = _train(model, zero)
    assert _states_equal(model, _model())
    assert [s.steps for s in stats] == [3, 3]


def test_the_identity_transform_trains_as_no_transform() -> None:
    plain, identity = _model(), _model()
    plain_stats = _train(plain)
    identity_stats = _train(identity, lambda update, batch: update)
    assert _states_equal(plain, identity)
    assert not _states_equal(plain, _model())
    assert [s.batch_losses for s in plain_stats] == [s.batch_losses for s in identity_stats]


def test_the_transform_sees_the_update_a_client_would_share() -> None:
    seen: list[tuple[SharedUpdate, PrivateBatch]] = []

    def record(update: SharedUpdate, batch: PrivateBatch) -> SharedUpdate:
        seen.append((update, batch))
        return update

    model = _model()
    _train(model, record, epochs=1)
    assert [len(batch) for _, batch in seen] == [3, 3, 1]
    update, batch = seen[0]
    assert update.kind is UpdateKind.GRADIENT and update.num_samples == 3
    assert update.tensors.keys() == dict(model.named_parameters()).keys()
    # Every image is visited once per epoch.
    images, _ = _data()
    visited = torch.cat([b.images for _, b in seen])
    assert sorted(visited.flatten(1).sum(1).tolist()) == sorted(images.flatten(1).sum(1).tolist())


def test_the_batch_order_depends_on_the_seed_alone() -> None:
    first, second = _model(), _model()
    torch.manual_seed(1)
    _train(first)
    torch.manual_seed(2)  # global randomness, as a defense's draws, must not move the batches
    torch.rand(5)
    _train(second)
    assert _states_equal(first, second)


def test_epoch_losses_weigh_images_or_steps() -> None:
    stats = _train(_model(), epochs=1)[0]
    losses = stats.batch_losses
    assert stats.seen == 7 and 0 <= stats.correct <= 7
    assert stats.batch_loss == pytest.approx(sum(losses) / 3)
    assert stats.sample_loss == pytest.approx((3 * losses[0] + 3 * losses[1] + losses[2]) / 7)
    assert stats.accuracy == stats.correct / 7


def test_accuracy_scores_in_eval_mode_and_restores_the_mode() -> None:
    model = build_model("resnet20", num_classes=3, in_channels=1, image_size=(28, 28), seed=0)
    images, labels = _data()
    model.train()
    model.eval()
    predicted = model(images).argmax(1)
    model.train()
    assert accuracy(model, images, labels) == int((predicted == labels).sum()) / 7
    assert model.training
    assert accuracy(model, images[:0], labels[:0]) is None
