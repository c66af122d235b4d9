"""Label recovery accuracy."""

from __future__ import annotations

from torch import Tensor

from gradleak.core.errors import GradleakError


def as_label_vector(labels: Tensor, name: str) -> Tensor:
    """Check a 1-D tensor of integer class indices and return it detached on the CPU."""
    if not isinstance(labels, Tensor):
        raise GradleakError(
            f"{name} must be a torch.Tensor, got {type(labels).__name__}; "
            "convert it with torch.as_tensor"
        )
    if labels.ndim != 1:
        raise GradleakError(
            f"{name} must be a 1-D tensor of class indices, got shape {tuple(labels.shape)}; "
            "use .argmax(dim=1) on scores or one-hot rows"
        )
    if labels.is_floating_point() or labels.is_complex():
        raise GradleakError(
            f"{name} must hold integer class indices, got {labels.dtype}; "
            "use .argmax(dim=1) on scores or .long() on whole numbers"
        )
    return labels.detach().cpu()


def label_accuracy(predicted: Tensor, true: Tensor) -> float:
    """Fraction of positions where predicted equals true (pass predicted in matched order).

    Args:
        predicted: recovered labels, a 1-D tensor of integer class indices, one per image,
            in the order of the ground-truth images.
        true: the true labels, a 1-D integer tensor of the same length.

    Returns:
        The share of equal entries, a float in [0, 1].

    Raises:
        GradleakError: when `predicted` or `true` is not a torch.Tensor.
        GradleakError: when `predicted` or `true` is not 1-D.
        GradleakError: when `predicted` or `true` is floating point or complex.
        GradleakError: when `predicted` and `true` differ in length.
        GradleakError: when both are empty.
    """
    pred = as_label_vector(predicted, "predicted labels")
    truth = as_label_vector(true, "true labels")
    if pred.shape != truth.shape:
        raise GradleakError(
            f"predicted labels have {pred.numel()} entries but true labels have "
            f"{truth.numel()}; pass one predicted label per ground-truth image"
        )
    if truth.numel() == 0:
        raise GradleakError("label tensors are empty; pass at least one label")
    return float((pred == truth).double().mean().item())
