"""Image, label and batch-matching metrics for scoring reconstructions."""

from gradleak.metrics.evaluate import CONVENTION, Evaluation, evaluate_images
from gradleak.metrics.image import PSNR_CEILING_DB, mse, psnr, psnr_from_mse, ssim
from gradleak.metrics.labels import label_accuracy
from gradleak.metrics.matching import match_reconstructions, pairwise_mse

__all__ = [
    "CONVENTION",
    "PSNR_CEILING_DB",
    "Evaluation",
    "evaluate_images",
    "label_accuracy",
    "match_reconstructions",
    "mse",
    "pairwise_mse",
    "psnr",
    "psnr_from_mse",
    "ssim",
]
