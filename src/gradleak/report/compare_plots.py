"""Figures of an attack comparison: snapshot grids and per-attack convergence curves (PNG).

Built on an Agg canvas like `report/plots.py` (no pyplot state, no display); matplotlib is
imported on first use.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from gradleak.core.errors import GradleakError
from gradleak.report.plots import COLORS, DPI, figure_png, log_y_axis

LOG_X_FROM = 50
"""Curves reaching this iteration are drawn on a log iteration axis."""


@dataclass(frozen=True)
class Tile:
    """One picture of a grid: B×C×H×W pixels in [0, 1] (None: nothing to show) and a caption."""

    pixels: Tensor | None
    caption: str = ""


@dataclass(frozen=True)
class GridRow:
    """A labelled row of tiles."""

    label: str
    tiles: Sequence[Tile]


@dataclass(frozen=True)
class Curve:
    """One line: x values and y values; `group` picks the colour and the legend entry."""

    group: str
    xs: Sequence[float]
    ys: Sequence[float]


def _strip(pixels: Tensor) -> Tensor:
    """A batch side by side (H×W or H×W×3, in [0, 1]) with one white column between images."""
    if pixels.ndim != 4 or pixels.shape[1] not in (1, 3):
        raise GradleakError(
            f"grid tiles must be B×C×H×W with 1 or 3 channels, got {tuple(pixels.shape)}"
        )
    images = torch.nan_to_num(pixels.detach().float().cpu(), nan=0.0).clamp(0, 1)
    gap = torch.ones(images.shape[1], images.shape[2], 1)
    parts: list[Tensor] = []
    for i, image in enumerate(images):
        if i:
            parts.append(gap)
        parts.append(image)
    strip = torch.cat(parts, dim=2).permute(1, 2, 0)
    return strip[:, :, 0] if strip.shape[2] == 1 else strip


def snapshot_grid_png(columns: Sequence[str], rows: Sequence[GridRow], title: str = "") -> bytes:
    """Rows of tiles under column headings; grey tiles in grey, missing tiles left blank."""
    if not rows or not columns:
        raise GradleakError("a snapshot grid needs at least one row and one column")
    if any(len(row.tiles) != len(columns) for row in rows):
        raise GradleakError(f"every grid row needs {len(columns)} tiles, one per column")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    side = 1.15
    figure = Figure(
        figsize=(1.9 + side * len(columns), 0.5 + (side + 0.2) * len(rows)),
        dpi=DPI,
        layout="constrained",
    )
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(rows), len(columns), squeeze=False)
    for r, row in enumerate(rows):
        for c, tile in enumerate(row.tiles):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if tile.pixels is not None:
                strip = _strip(tile.pixels)
                # Nearest neighbour: smoothing would hide what was (not) recovered.
                cmap = "gray" if strip.ndim == 2 else None
                ax.imshow(strip.numpy(), cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            if tile.caption:
                ax.set_xlabel(tile.caption, fontsize=6, labelpad=1)
            if r == 0:
                ax.set_title(columns[c], fontsize=8)
        axes[r][0].set_ylabel(row.label, fontsize=7, rotation=0, ha="right", va="center")
    if title:
        figure.suptitle(title, fontsize=9)
    return figure_png(figure)


def curves_png(
    panels: Sequence[tuple[str, Sequence[Curve]]], title: str = "", log_y: bool = True
) -> bytes:
    """Side-by-side panels (y label, curves) against iteration; one colour per group.

    Long runs get a log iteration axis, so the early iterations (where the attacks part
    ways) are not squeezed into the left edge.
    """
    if not panels:
        raise GradleakError("a curve figure needs at least one panel")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.0 * len(panels), 3.6), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    groups = list(dict.fromkeys(c.group for _, curves in panels for c in curves))
    for ax, (label, curves) in zip(axes, panels, strict=True):
        ax.grid(True, which="major", alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
        seen: set[str] = set()
        values: list[float] = []
        steps: list[float] = []
        for curve in curves:
            points = [(x, y) for x, y in zip(curve.xs, curve.ys, strict=True) if math.isfinite(y)]
            if not points:
                continue
            xs, ys = zip(*points, strict=True)
            values.extend(ys)
            steps.extend(xs)
            color = COLORS[groups.index(curve.group) % len(COLORS)]
            legend = None if curve.group in seen else curve.group
            seen.add(curve.group)
            ax.plot(xs, ys, color=color, lw=1.2, alpha=0.85, label=legend)
        if not values:
            ax.text(0.5, 0.5, "nothing recorded", ha="center", va="center", transform=ax.transAxes)
            continue
        if log_y and all(v > 0 for v in values):
            log_y_axis(ax, values)
        if min(steps) >= 1 and max(steps) >= LOG_X_FROM:
            ax.set_xscale("log")
        ax.set_xlabel("iteration")
        ax.set_ylabel(label)
        ax.legend(fontsize="small", frameon=False)
    if title:
        figure.suptitle(title, fontsize=10)
    return figure_png(figure)
