"""A reconstruction beside its prior's nearest training image: leakage or memory?

A generator or an inverter trained on auxiliary images can return one of those images
instead of the client's. Reports therefore show, for every reconstructed image, the
training image of the prior nearest to it (mean squared error in pixel space) and compare
the reconstruction's PSNR to the truth with its PSNR to that training image.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from gradleak.metrics.image import psnr


class TrainedPrior(Protocol):
    """What both trained priors offer: their training images and where those came from."""

    dataset: str
    training_images: torch.Tensor

    def nearest_training_images(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The nearest training image of each of B×C×H×W pixels, and their indices."""
        ...


def _generative(path: str) -> TrainedPrior:
    from gradleak.attacks.priors.generative import load_generative_prior

    return load_generative_prior(path)


def _inverter(path: str) -> TrainedPrior:
    from gradleak.attacks.priors.inverter import load_inverter

    return load_inverter(path)


def nearest_stored_images(
    stored: torch.Tensor, images: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The stored image nearest to each image (mean squared error over pixels).

    Args:
        stored: a prior's training images, uint8 N×C×H×W (N >= 1).
        images: pixels in [0, 1], B×C×H×W of the same image shape.

    Returns:
        The nearest stored images as float32 pixels in [0, 1], B×C×H×W (on the CPU), and
        their indices into `stored`, int64 (B,).
    """
    kept = stored.cpu().float() / 255.0
    flat = kept.flatten(1)
    # One image at a time: exact differences (no |a|²+|b|²-2ab cancellation), so an image
    # that is a stored image finds itself at distance 0.
    distances = torch.stack(
        [(flat - x.float().cpu().reshape(1, -1)).square().mean(dim=1) for x in images.detach()]
    )
    indices = distances.argmin(dim=1)
    return kept[indices], indices


# The reconstruction's detail naming the trained prior's file → how that file is loaded.
PRIOR_FILE_DETAILS: dict[str, Callable[[str], TrainedPrior]] = {
    "prior_file": _generative,
    "inverter_file": _inverter,
}


@dataclass(frozen=True)
class NearestTraining:
    """Each reconstructed image's nearest training image of the prior, and what it says.

    Attributes:
        images: B×C×H×W pixels in [0, 1]; column j is nearest to the reconstruction
            matched with truth image j.
        indices: their indices among the prior's training images.
        psnr_to_truth: mean PSNR of the matched reconstructions to the truth (dB).
        psnr_to_nearest: mean PSNR of the reconstructions to their nearest training images;
            above `psnr_to_truth`, the reconstruction is closer to the prior's memory.
        trained_on: the prior's training data, as its file records it.
        file: the prior's file.
    """

    images: torch.Tensor
    indices: list[int]
    psnr_to_truth: float
    psnr_to_nearest: float
    trained_on: str
    file: str

    def summary(self) -> dict[str, Any]:
        """What metrics.json records (no pixels)."""
        return {
            "file": self.file,
            "trained_on": self.trained_on,
            "indices": self.indices,
            "psnr_to_truth": self.psnr_to_truth,
            "psnr_to_nearest": self.psnr_to_nearest,
        }


def nearest_training(
    details: Mapping[str, Any],
    truth01: torch.Tensor,
    recon01: torch.Tensor,
    matching: Sequence[int],
) -> NearestTraining | None:
    """The nearest training images of the prior a reconstruction used (None: it used none).

    Args:
        details: the reconstruction's details; "prior_file" (a generative prior) or
            "inverter_file" (a learned inverter) names the prior.
        truth01: the client's images, B×C×H×W in [0, 1].
        recon01: the reconstruction, B×C×H×W in [0, 1].
        matching: matching[i], the reconstruction matched to truth image i.

    Returns:
        The nearest images in truth order, their indices and the two PSNRs.

    Raises:
        GradleakError: when the prior's file can no longer be read.
    """
    for key, load in PRIOR_FILE_DETAILS.items():
        path = details.get(key)
        if path:
            prior = load(str(path))
            break
    else:
        return None
    if len(prior.training_images) == 0:  # a prior saved without its images: nothing to show
        return None
    matched = recon01[torch.as_tensor(list(matching), dtype=torch.long, device=recon01.device)]
    nearest, indices = prior.nearest_training_images(matched)
    return NearestTraining(
        nearest,
        [int(i) for i in indices],
        float(psnr(matched, truth01).mean()),
        float(psnr(matched, nearest).mean()),
        prior.dataset,
        str(path),
    )
