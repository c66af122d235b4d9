"""What a defense costs in accuracy: training with the defense on every step."""

from __future__ import annotations

from pathlib import Path

import pytest

from gradleak.core.errors import GradleakError
from gradleak.training.utility import UtilityConfig, train_with_defenses

pytestmark = pytest.mark.usefixtures("one_thread")

MNIST = Path(__file__).resolve().parents[3] / "shared" / "data"
TINY = {"dataset": "cifar10", "train_count": 6, "test_count": 2, "epochs": 1, "batch_size": 2}


def test_same_seed_and_budget_give_the_same_model() -> None:
    a = train_with_defenses(UtilityConfig(**TINY))
    b = train_with_defenses(UtilityConfig(**TINY))
    assert (a.accuracy, a.loss, a.steps) == (b.accuracy, b.loss, b.steps)
    assert a.steps == 3 and a.epsilon is None


def test_every_setting_trains_on_the_same_batches() -> None:
    # A defense that draws random numbers but changes nothing must train exactly as none.
    config = {**TINY, "epochs": 3}
    plain = train_with_defenses(UtilityConfig(**config))
    silent = train_with_defenses(UtilityConfig(**config, defenses=("noise:gaussian:0",)))
    assert (silent.loss, silent.accuracy) == (plain.loss, plain.accuracy)


def test_a_defense_changes_the_training() -> None:
    plain = train_with_defenses(UtilityConfig(**TINY))
    noisy = train_with_defenses(UtilityConfig(**TINY, defenses=("noise:gaussian:1",)))
    assert plain.loss != noisy.loss


def test_more_images_than_the_split_holds_is_one_line() -> None:
    with pytest.raises(GradleakError, match="need 10, but the cifar10 test split has 8"):
        train_with_defenses(UtilityConfig(**{**TINY, "train_count": 8}))


@pytest.mark.skipif(not (MNIST / "mnist").is_dir(), reason="needs MNIST in ../shared/data")
def test_strong_noise_costs_accuracy_on_mnist() -> None:
    base = UtilityConfig(dataset="mnist", data_root=MNIST, epochs=1)
    plain = train_with_defenses(base)
    noisy = train_with_defenses(
        UtilityConfig(**{**base.__dict__, "defenses": ("noise:gaussian:1e-1",)})
    )
    assert plain.accuracy > 0.8  # LeNet learns MNIST in one epoch
    assert noisy.accuracy < plain.accuracy - 0.1
