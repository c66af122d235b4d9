"""Which images a prior trains on by default: never the ones attacks are evaluated on.

The literature evaluates attacks on the first 100 test images of CIFAR-10/100 and MNIST,
so priors and inverters train on images 100–599 of those splits unless told otherwise
(`--range A-B`). A folder of the user's images holds no evaluation protocol: all of it.
"""

from __future__ import annotations

from gradleak.core.errors import GradleakError
from gradleak.data.loading import FILE_DATASETS

AUXILIARY_RANGE = (100, 599)


def auxiliary_range(
    dataset: str, dataset_size: int, given: tuple[int, int] | None, where: str
) -> tuple[int, int]:
    """The training images' indices (first, last), both included, checked against the split.

    Args:
        dataset: the dataset's name.
        dataset_size: how many images the split holds.
        given: the range asked for (`--range A-B`), or None for the default.
        where: how messages name the split, e.g. "the cifar10 test split".

    Returns:
        `given`, or images 100–599 of the split (as many as there are), or a whole folder.

    Raises:
        GradleakError: the range goes past the split, or by default the split holds no
            image after the 100 kept for evaluation.
    """
    if given is None and dataset in FILE_DATASETS:
        return 0, dataset_size - 1
    if given is None:
        first, last = AUXILIARY_RANGE
        if dataset_size <= first:
            raise GradleakError(
                f"{where} has {dataset_size} images, all among the first {first} that "
                "attacks are evaluated on; give the auxiliary images with --range A-B"
            )
        return first, min(last, dataset_size - 1)
    first, last = given
    if last >= dataset_size:
        raise GradleakError(
            f"range {first}-{last} goes past {where}, which has {dataset_size} images "
            f"(0-{dataset_size - 1}); choose indices up to {dataset_size - 1}"
        )
    return first, last
