"""PNG pictures of image batches: strips and truth-versus-reconstruction grids."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor

from gradleak.core.errors import GradleakError
from gradleak.core.files import replaced_atomically
from gradleak.metrics.matching import match_reconstructions

GAP_PX = 2
"""White space between tiles, in output pixels (not scaled)."""

MIN_DISPLAY_HEIGHT_PX = 128
"""Automatic scaling enlarges each tile to at least this height."""

_CHANNELS = (1, 3)  # grey (L) or RGB


def to_pil(image01: Tensor) -> Image.Image:
    """Convert one C×H×W image in [0, 1] (C = 1 or 3) to an 8-bit PIL image, clamping first."""
    if not isinstance(image01, Tensor) or image01.ndim != 3:
        shape = tuple(image01.shape) if isinstance(image01, Tensor) else type(image01).__name__
        raise GradleakError(
            f"to_pil needs one C×H×W image tensor, got {shape}; index a batch with images[i]"
        )
    channels = image01.shape[0]
    if channels not in _CHANNELS:
        raise GradleakError(
            f"to_pil supports 1 (grey) or 3 (RGB) channels, got {channels}; "
            "select or average channels first"
        )
    if not image01.is_floating_point():
        raise GradleakError(
            f"to_pil needs a float image in [0, 1], got {image01.dtype}; "
            "divide 8-bit images by 255.0"
        )
    if torch.isnan(image01).any():
        raise GradleakError("image contains NaN; the attack probably diverged, lower its step size")
    pixels = (image01.detach().cpu().float().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    array = pixels.permute(1, 2, 0).numpy()
    if channels == 1:
        array = array[:, :, 0]
    # Pillow infers L from H×W uint8 and RGB from H×W×3 uint8.
    return Image.fromarray(array)


def _check_batch(images01: Tensor, name: str) -> None:
    if not isinstance(images01, Tensor) or images01.ndim != 4 or images01.shape[0] == 0:
        shape = tuple(images01.shape) if isinstance(images01, Tensor) else type(images01).__name__
        raise GradleakError(
            f"{name} must be a non-empty B×C×H×W tensor, got {shape}; "
            "add a batch dimension with .unsqueeze(0)"
        )


def resolve_scale(height: int, scale: int | None) -> int:
    if scale is None:
        return max(1, math.ceil(MIN_DISPLAY_HEIGHT_PX / height))
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise GradleakError(f"scale must be a positive integer or None, got {scale!r}")
    return scale


def tile_rows(rows: Sequence[Sequence[Image.Image]], scale: int) -> Image.Image:
    """Lay equally sized images out in rows on a white canvas, enlarged by nearest neighbour."""
    first = rows[0][0]
    tile_w, tile_h = first.width * scale, first.height * scale
    n_cols = max(len(row) for row in rows)
    canvas = Image.new(
        first.mode,
        (n_cols * tile_w + (n_cols - 1) * GAP_PX, len(rows) * tile_h + (len(rows) - 1) * GAP_PX),
        color=255 if first.mode == "L" else (255, 255, 255),
    )
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            # Nearest neighbour keeps pixels sharp; smoothing would hide what was recovered.
            big = image.resize((tile_w, tile_h), Image.Resampling.NEAREST)
            canvas.paste(big, (c * (tile_w + GAP_PX), r * (tile_h + GAP_PX)))
    return canvas


def save_png(image: Image.Image, path: Path) -> None:
    """Save `image` in the format its file name says (.png), replacing the file whole."""
    path = Path(path)
    # The partial file's name has no image suffix, so the format is named explicitly.
    # PIL's common formats (PNG among them) first: registering every plugin to look up a
    # .png costs a tenth of a second, a good part of a small attack's fixed cost.
    Image.preinit()
    suffix = path.suffix.lower()
    image_format = Image.EXTENSION.get(suffix) or Image.registered_extensions().get(suffix)
    if image_format is None:
        raise GradleakError(
            f"cannot save an image as {path}: unknown file extension; use a .png file name"
        )
    with replaced_atomically(path) as partial:
        image.save(partial, format=image_format)


def save_image_strip(images01: Tensor, path: Path, scale: int | None = None) -> None:
    """Save a batch side by side with white gaps; scale None enlarges small images to ~128 px."""
    _check_batch(images01, "images")
    tiles = [to_pil(image) for image in images01]
    save_png(tile_rows([tiles], resolve_scale(images01.shape[-2], scale)), path)


def save_comparison_grid(
    truth01: Tensor,
    recon01: Tensor,
    path: Path,
    scale: int | None = None,
    matching: Sequence[int] | Tensor | None = None,
) -> None:
    """Save ground truth (top row) over the matched reconstructions (bottom row).

    matching is the order from match_reconstructions; None computes it here, so each
    column always shows a truth image above the reconstruction assigned to it.
    """
    _check_batch(truth01, "ground truth")
    _check_batch(recon01, "reconstruction")
    if truth01.shape != recon01.shape:
        raise GradleakError(
            f"reconstruction has shape {tuple(recon01.shape)} but ground truth has shape "
            f"{tuple(truth01.shape)}; pass one reconstruction per ground-truth image"
        )
    if matching is None:
        order = match_reconstructions(recon01, truth01)
    else:
        order = torch.as_tensor(matching, dtype=torch.int64).cpu()
        if sorted(order.tolist()) != list(range(truth01.shape[0])):
            raise GradleakError(
                f"matching {order.tolist()} is not a permutation of 0..{truth01.shape[0] - 1}; "
                "pass the order from match_reconstructions"
            )
    top = [to_pil(image) for image in truth01]
    bottom = [to_pil(recon01[int(j)]) for j in order]
    save_png(tile_rows([top, bottom], resolve_scale(truth01.shape[-2], scale)), path)


# The run's picture of truth, reconstruction and the prior's nearest training image.
PRIOR_GRID = "prior_nearest.png"


def save_prior_grid(
    truth01: Tensor, recon01: Tensor, nearest01: Tensor, path: Path, scale: int | None = None
) -> None:
    """Save the truth, the reconstruction and the prior's nearest training image, in rows.

    All three are B×C×H×W in [0, 1], column j showing one image: the reconstruction
    matched to truth j and the training image of the prior nearest to that reconstruction.
    A reconstruction that looks like the third row rather than the first came from the
    prior's memory, not from the update.
    """
    for images, name in ((truth01, "ground truth"), (recon01, "reconstruction")):
        _check_batch(images, name)
    _check_batch(nearest01, "nearest training images")
    rows = [[to_pil(image) for image in batch] for batch in (truth01, recon01, nearest01)]
    save_png(tile_rows(rows, resolve_scale(truth01.shape[-2], scale)), path)
