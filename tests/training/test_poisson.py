"""Poisson-sampled batches: the sampling DP-SGD's accountant assumes, and the training on it."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch

import gradleak.training.utility as utility_module
from gradleak.core.batch import PrivateBatch
from gradleak.core.update import SharedUpdate
from gradleak.defenses import ClientView, Defense
from gradleak.defenses.accounting import dp_epsilon
from gradleak.models import build_model
from gradleak.training.sgd import BATCHES, Sampling, sgd_epochs
from gradleak.training.utility import UtilityConfig, train_with_defenses

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"dataset": "cifar10", "train_count": 6, "test_count": 2, "batch_size": 2}


def _poisson(count: int, batch_size: int, seed: int) -> list[torch.Tensor]:
    return list(BATCHES[Sampling.POISSON](count, batch_size, torch.Generator().manual_seed(seed)))


@pytest.mark.parametrize(("count", "batch_size"), [(50, 5), (7, 3), (6, 6)])
def test_the_batches_are_those_opacus_dp_data_loader_samples(count: int, batch_size: int) -> None:
    sampler_module = pytest.importorskip("opacus.utils.uniform_sampler")
    for seed in range(5):
        sampler = sampler_module.UniformWithReplacementSampler(
            num_samples=count,
            sample_rate=batch_size / count,
            generator=torch.Generator().manual_seed(seed),
            steps=math.ceil(count / batch_size),
        )
        ours = [index.tolist() for index in _poisson(count, batch_size, seed)]
        assert ours == list(sampler)


def test_each_image_is_in_each_batch_independently_with_probability_q() -> None:
    count, batch_size, seeds = 50, 5, 400  # q = 0.1, 10 steps an epoch: 4000 batches
    q = batch_size / count
    sizes, inclusions = [], torch.zeros(count)
    for seed in range(seeds):
        batches = _poisson(count, batch_size, seed)
        assert len(batches) == 10
        for index in batches:
            assert index.unique().numel() == index.numel()  # an image at most once a batch
            sizes.append(index.numel())
            inclusions[index] += 1
    n = len(sizes)
    mean = sum(sizes) / n
    variance = sum((s - mean) ** 2 for s in sizes) / (n - 1)
    # Binomial(N, q) batch sizes: mean q·N = 5 (standard error 0.034), variance
    # N·q·(1-q) = 4.5; empty batches happen ((1-q)^N = 0.5%).
    assert mean == pytest.approx(q * count, abs=0.15)
    assert variance == pytest.approx(count * q * (1 - q), rel=0.1)
    assert min(sizes) == 0 and max(sizes) >= 12
    # Every image's share of the batches is q (standard error 0.0047).
    assert (inclusions / n - q).abs().max() < 0.025


def _images() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(7, 1, 28, 28, generator=g), torch.tensor([0, 1, 2, 0, 1, 2, 0])


def test_an_empty_batch_is_a_step_with_a_zero_gradient() -> None:
    model = build_model("lenet", num_classes=3, in_channels=1, image_size=(28, 28), seed=3)
    seen: list[tuple[int, float]] = []

    def shift(update: SharedUpdate, batch: PrivateBatch) -> SharedUpdate:
        total = sum(float(t.abs().sum()) for t in update.tensors.values())
        seen.append((len(batch), total))
        tensors = {name: t + 0.01 for name, t in update.tensors.items()}
        return SharedUpdate(tensors, update.kind, update.metadata)

    images, labels = _images()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    stats = list(
        sgd_epochs(
            model,
            optimizer,
            images,
            labels,
            epochs=2,
            batch_size=1,  # q = 1/7: a batch is empty with probability (6/7)^7 = 0.34
            seed=4,
            transform=shift,
            sampling=Sampling.POISSON,
        )
    )
    assert [s.steps for s in stats] == [7, 7]
    assert len(seen) == 14
    empty = [total for size, total in seen if size == 0]
    assert empty and all(total == 0.0 for total in empty)  # nothing to learn from
    assert all(total > 0 for size, total in seen if size)
    assert sum(len(s.batch_losses) for s in stats) == 14 - len(empty)
    assert sum(s.seen for s in stats) == sum(size for size, _ in seen)


class _Spy:
    """Records the batches the utility training defends, and shares the update unchanged."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.expected: set[int | None] = set()

    def __call__(
        self,
        update: SharedUpdate,
        defenses: list[Defense],
        generator: torch.Generator,
        client: ClientView,
    ) -> SharedUpdate:
        self.sizes.append(len(client.batch))
        self.expected.add(client.expected_batch_size)
        return update


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Spy]:
    recorder = _Spy()
    monkeypatch.setattr(utility_module, "apply_defenses", recorder)
    yield recorder


def test_the_utility_training_of_dpsgd_draws_poisson_batches(spy: _Spy) -> None:
    pytest.importorskip("opacus")
    results = [
        train_with_defenses(
            UtilityConfig(**TINY, epochs=40, lr=1e-3, seed=seed, defenses=("dpsgd:1:1.1",))
        )
        for seed in range(3)
    ]
    for result in results:
        assert (result.sampling, result.sample_rate) == ("poisson", 2 / 6)
        assert result.steps == 40 * 3
        assert result.epsilon == dp_epsilon(1.1, 2 / 6, 120, 1e-5)
    # Batch sizes are Binomial(6, 1/3): mean 2 (standard error 0.06 over 360 steps).
    assert len(spy.sizes) == 360
    assert len(set(spy.sizes)) >= 4 and min(spy.sizes) == 0
    assert sum(spy.sizes) / len(spy.sizes) == pytest.approx(2, abs=0.25)
    assert spy.expected == {2}  # DP-SGD averages over q·N, never the batch's own size


def test_training_without_dp_keeps_shuffled_batches(spy: _Spy) -> None:
    result = train_with_defenses(UtilityConfig(**TINY, epochs=2, defenses=("prune:0.5",)))
    assert (result.sampling, result.sample_rate, result.epsilon) == ("shuffled", None, None)
    assert spy.sizes == [2] * 6 and spy.expected == {None}


def test_dpsgd_trains_through_empty_batches() -> None:
    pytest.importorskip("opacus")
    config = UtilityConfig(**{**TINY, "batch_size": 1}, epochs=2, defenses=("dpsgd:1:1",))
    order = torch.Generator().manual_seed(config.seed)  # the batches the training draws
    assert any(len(i) == 0 for _ in range(2) for i in BATCHES[Sampling.POISSON](6, 1, order))
    result = train_with_defenses(config)  # q = 1/6: about a third of the batches are empty
    assert result.steps == 12 and result.sampling == "poisson"
    assert math.isfinite(result.loss) and 0 <= result.accuracy <= 1
    assert result.epsilon == dp_epsilon(1.0, 1 / 6, 12, 1e-5)
