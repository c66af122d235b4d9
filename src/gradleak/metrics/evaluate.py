"""Score a reconstructed batch against the ground truth after optimal matching."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from torch import Tensor

from gradleak.core.errors import GradleakError
from gradleak.metrics._checks import image_pair
from gradleak.metrics.image import (
    EXACT_PSNR_DB,
    PSNR_CEILING_DB,
    SSIM_SIGMA,
    SSIM_WINDOW,
    mse,
    psnr_from_mse,
    ssim,
    ssim_supported,
)
from gradleak.metrics.labels import as_label_vector, label_accuracy
from gradleak.metrics.matching import match_reconstructions

CONVENTION: str = (
    "Images are mapped back to [0, 1] and clamped before scoring. Reconstructions are first "
    "assigned one-to-one to ground-truth images by the Hungarian method, minimising the total "
    "per-pair MSE, and the assignment is reported. MSE is the mean squared pixel error per "
    "image; PSNR is 10·log10(1/MSE) in dB per image, then averaged over images (not the PSNR "
    f"of the mean MSE), and is capped at {PSNR_CEILING_DB:g} dB for exact reconstructions "
    f"(MSE below 1e-{PSNR_CEILING_DB / 10:g}). SSIM is the standard Gaussian-window SSIM "
    f"({SSIM_WINDOW}×{SSIM_WINDOW}, σ={SSIM_SIGMA:g}, K1=0.01, K2=0.03, data range 1) averaged "
    "over the windows that lie fully inside the image and over channels, then over images; "
    f"it is not reported for images smaller than {SSIM_WINDOW}×{SSIM_WINDOW}. Label accuracy "
    "is the fraction of recovered labels equal to the true label of the matched image. An "
    f"image counts as recovered exactly when its matched PSNR is at least {EXACT_PSNR_DB:g} dB."
)
"""How `evaluate_images` scores, in words, for reports and result files."""


@dataclass
class Evaluation:
    """Metrics of one reconstructed batch; means are over ground-truth images.

    Built by `evaluate_images`, after matching each ground-truth image to a reconstruction.

    Attributes:
        psnr: the mean over images of each matched pair's PSNR, in dB (not the PSNR of the
            mean MSE); at most 100.
        ssim: the mean over images of each matched pair's SSIM, or None when the images
            are smaller than the 11×11 SSIM window.
        mse: the mean over images of each matched pair's MSE, on [0, 1] images.
        label_accuracy: the share of recovered labels equal to their matched image's true
            label, in [0, 1], or None when labels were not given.
        per_image: one dict per ground-truth image i, in order, with keys "index" (i),
            "matched_reconstruction" (its reconstruction's index), "psnr", "ssim" (None
            as above) and "mse".
        matching: matching[i] is the index of the reconstruction matched to image i.
        exact_fraction: the share of ground-truth images whose matched PSNR is at least
            `EXACT_PSNR_DB` (60 dB): recovered exactly, in [0, 1].
    """

    psnr: float
    ssim: float | None  # None when the images are smaller than the SSIM window
    mse: float
    label_accuracy: float | None
    per_image: list[dict[str, Any]] = field(default_factory=list)
    matching: list[int] = field(default_factory=list)
    exact_fraction: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain floats, ints, lists and None, ready for json.dump.

        Returns:
            A dict with one key per attribute, `per_image` as a list of dicts.
        """
        return asdict(self)


def evaluate_images(
    recon01: Tensor,
    truth01: Tensor,
    recon_labels: Tensor | None = None,
    true_labels: Tensor | None = None,
) -> Evaluation:
    """Match reconstructions to ground truth, then score the matched pairs and labels.

    Reconstructions are assigned one-to-one to ground-truth images so that the total MSE
    is smallest (`match_reconstructions`); each pair is then scored by MSE, PSNR and SSIM
    (see `CONVENTION`), and each recovered label follows its reconstruction.

    Args:
        recon01: reconstructed images B×C×H×W, floating point, values in [0, 1] (others
            are clamped), in any order.
        truth01: ground-truth images of the same shape.
        recon_labels: the label recovered for each reconstruction, a 1-D integer tensor
            in the order of `recon01`; default None.
        true_labels: the true label of each ground-truth image, a 1-D integer tensor;
            default None. Label accuracy is scored only when both label tensors are given.

    Returns:
        The `Evaluation`: means over images, the per-image scores and the matching.

    Raises:
        GradleakError: when `recon01` or `truth01` is not a B×C×H×W floating-point torch.Tensor.
        GradleakError: when `recon01` or `truth01` is empty or contains NaN.
        GradleakError: when `recon01` and `truth01` differ in shape.
        GradleakError: when a label tensor is not a 1-D tensor of integers.
        GradleakError: when `recon_labels` does not hold one label per image.
        GradleakError: when `true_labels` does not hold one label per image.
    """
    recon, truth = image_pair(recon01, truth01, "reconstruction", "ground truth")
    order = match_reconstructions(recon, truth)
    matched = recon[order]

    errors = mse(matched, truth)
    psnrs = psnr_from_mse(errors)
    has_ssim = ssim_supported(*truth.shape[-2:])
    ssims = ssim(matched, truth).tolist() if has_ssim else [None] * truth.shape[0]

    accuracy = None
    if recon_labels is not None and true_labels is not None:
        predicted = as_label_vector(recon_labels, "recovered labels")
        if predicted.shape[0] != truth.shape[0]:
            raise GradleakError(
                f"got {predicted.shape[0]} recovered labels for {truth.shape[0]} images; "
                "pass one recovered label per reconstruction"
            )
        # Labels follow their images: the label of recon[order[i]] is compared to truth i.
        accuracy = label_accuracy(predicted[order], true_labels)

    per_image = [
        {
            "index": i,
            "matched_reconstruction": int(order[i]),
            "psnr": float(psnrs[i]),
            "ssim": ssims[i],
            "mse": float(errors[i]),
        }
        for i in range(truth.shape[0])
    ]
    return Evaluation(
        psnr=float(psnrs.mean()),
        ssim=float(sum(ssims) / len(ssims)) if has_ssim else None,
        mse=float(errors.mean()),
        label_accuracy=accuracy,
        per_image=per_image,
        matching=[int(j) for j in order],
        exact_fraction=float((psnrs >= EXACT_PSNR_DB).double().mean()),
    )
