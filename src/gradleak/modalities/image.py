"""Images: normally drawn dummy images, the valid-pixel box, total variation, pixels in
[0, 1], PSNR/SSIM after matching, and PNG pictures."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from gradleak.data.normalize import denormalize, pixel_bounds
from gradleak.metrics import (
    CONVENTION,
    Evaluation,
    evaluate_images,
    match_reconstructions,
    mse,
    psnr,
)
from gradleak.modalities.base import SuccessRule
from gradleak.report.images import save_comparison_grid, save_image_strip

if TYPE_CHECKING:
    from gradleak.core.knowledge import Knowledge

# Total-variation weights by image size. ImageNet-scale: 1e-1, Inverting Gradients' ImageNet
# ResNet examples. CIFAR-scale: 0.05, not the paper code's 1e-4, which barely regularises:
# at equal wall time 0.05 recovered 2-4 dB more than 1e-4 on untrained LeNet and ResNet-20
# and beat 0.2 and 0.5 (docs/RESULTS.md, "IG defaults at equal wall time").
SMALL_IMAGE_TV_WEIGHT = 0.05
LARGE_IMAGE_TV_WEIGHT = 1e-1
LARGE_IMAGE_SIDE = 64  # images at least this tall and wide count as ImageNet-scale

SNAPSHOT_DIR = "snapshots"


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between horizontal and vertical neighbours (anisotropic TV).

    Only differences inside the image count ("interior" form)."""
    dx = (images[..., :, 1:] - images[..., :, :-1]).abs().mean()
    dy = (images[..., 1:, :] - images[..., :-1, :]).abs().mean()
    return dx + dy


def padded_total_variation(images: torch.Tensor) -> torch.Tensor:
    """Anisotropic TV of the image zero-padded on its right and bottom ("padded" form).

    Every pixel contributes |x[i, j+1] − x[i, j]| + |x[i+1, j] − x[i, j]|, with the pixels
    beyond the last column and row taken as 0, and the sum is averaged over all pixels (the
    form of Geiping et al.'s later reference code). In normalised space 0 is the dataset's
    mean, so the last row and column are also pulled toward the mean colour.
    """
    dx = torch.nn.functional.pad(images, (0, 1)).diff(dim=-1)
    dy = torch.nn.functional.pad(images, (0, 0, 0, 1)).diff(dim=-2)
    return (dx.abs() + dy.abs()).mean()


# The TV forms an attack can choose (`GradientMatchingConfig.tv_form`), by name; the
# modality's own prior is the interior form.
TV_FORMS = {"interior": total_variation, "padded": padded_total_variation}


class ImageModality:
    """Images attacked in normalised space and scored as [0, 1] pixels."""

    name = "image"
    convention = CONVENTION
    scores = ("psnr", "ssim", "mse", "label_accuracy", "exact_fraction")
    summary_scores = ("psnr", "ssim")
    headline = "psnr"

    def success_rule(self, success_psnr: float) -> SuccessRule:
        """A reconstruction reaching the study's PSNR threshold (mean over the batch)."""
        return SuccessRule("psnr", success_psnr, f"PSNR ≥ {success_psnr:g} dB")

    def initial_inputs(
        self, init: str, shape: tuple[int, ...], generator: torch.Generator
    ) -> torch.Tensor:
        """Dummy images: standard normal (randn), uniform in [−0.5, 0.5) or zeros, on the
        generator's device (the engine moves them to the model's)."""
        device = generator.device
        makers = {
            "randn": lambda: torch.randn(shape, generator=generator, device=device),
            "uniform": lambda: torch.rand(shape, generator=generator, device=device) - 0.5,
            "zeros": lambda: torch.zeros(shape, device=device),
        }
        return makers[init]()

    def bounds(self, knowledge: Knowledge) -> tuple[torch.Tensor, torch.Tensor]:
        """The normalised values of pixels 0 and 1, per channel (C×1×1 each)."""
        return pixel_bounds(knowledge.mean, knowledge.std)

    def prior(self, inputs: torch.Tensor) -> torch.Tensor:
        """Anisotropic total variation, interior form (`TV_FORMS` has the others)."""
        return total_variation(inputs)

    def default_prior_weight(self, data_shape: tuple[int, ...]) -> float:
        """The TV weight: 0.05 below 64 pixels a side, 1e-1 from 64 on."""
        large = min(data_shape[1:]) >= LARGE_IMAGE_SIDE
        return LARGE_IMAGE_TV_WEIGHT if large else SMALL_IMAGE_TV_WEIGHT

    def decode(self, inputs: torch.Tensor, knowledge: Knowledge) -> torch.Tensor:
        """Normalised images back to [0, 1] pixels, clamped."""
        return denormalize(inputs, knowledge.mean, knowledge.std).clamp(0, 1)

    def score(
        self,
        recon: torch.Tensor,
        truth: torch.Tensor,
        recon_labels: torch.Tensor | None,
        true_labels: torch.Tensor | None,
    ) -> Evaluation:
        """PSNR, SSIM, MSE and label accuracy after Hungarian matching (`evaluate_images`)."""
        return evaluate_images(recon, truth, recon_labels, true_labels)

    def progress(
        self, recon: torch.Tensor, truth: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The matching order, and the mean PSNR and MSE of the matched reconstructions."""
        order = match_reconstructions(recon, truth)
        value = float(psnr(recon[order], truth).mean())
        error = float(mse(recon[order], truth).mean())
        return order, {"psnr": value, "mse": error}

    def render_run(
        self, out_dir: Path, truth: torch.Tensor, recon: torch.Tensor, matching: list[int]
    ) -> None:
        """reconstruction.png (matched to the truth's order) and grid.png (truth above)."""
        save_image_strip(recon[matching], out_dir / "reconstruction.png")
        save_comparison_grid(truth, recon, out_dir / "grid.png", matching=matching)

    def snapshot_file(self, iteration: int) -> str:
        """snapshots/iter_NNNNNN.png."""
        return f"{SNAPSHOT_DIR}/iter_{iteration:06d}.png"

    def render_snapshot(self, decoded: torch.Tensor, path: Path) -> None:
        """One PNG strip; a diverged iterate may hold NaN, shown black rather than failing."""
        save_image_strip(torch.nan_to_num(decoded, nan=0.0), path)
