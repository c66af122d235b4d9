"""The images priors train on by default: never the 100 that attacks are evaluated on."""

from __future__ import annotations

import pytest

from gradleak.core.errors import GradleakError
from gradleak.training.auxiliary import AUXILIARY_RANGE, auxiliary_range


def test_the_default_skips_the_evaluation_images() -> None:
    assert AUXILIARY_RANGE == (100, 599)
    assert auxiliary_range("cifar10", 600, None, "cifar10") == (100, 599)
    assert auxiliary_range("mnist", 10_000, None, "mnist") == (100, 599)
    assert auxiliary_range("cifar10", 300, None, "cifar10") == (100, 299)


def test_a_folder_of_ones_own_images_is_used_whole() -> None:
    assert auxiliary_range("folder", 60, None, "the folder") == (0, 59)


def test_a_given_range_is_kept_and_checked() -> None:
    assert auxiliary_range("cifar10", 600, (0, 9), "cifar10") == (0, 9)
    with pytest.raises(GradleakError, match="goes past the split, which has 600 images"):
        auxiliary_range("cifar10", 600, (500, 600), "the split")


def test_a_split_with_only_evaluation_images_needs_a_range() -> None:
    with pytest.raises(GradleakError, match="all among the first 100 .* --range A-B"):
        auxiliary_range("cifar10", 80, None, "the cifar10 test split")
