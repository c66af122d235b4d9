"""Plots for the HTML reports, as PNG bytes (matplotlib's Agg renderer, no display).

Rows are mappings of column name to value, as read by csv.DictReader (strings, empty for
missing) or as kept in memory (numbers, None for missing); both are accepted.
matplotlib is imported on first use, so importing this module costs nothing at start-up.
No pyplot: figures are built directly on an Agg canvas (no global state, no display).
"""

from __future__ import annotations

import io
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from gradleak.core.errors import GradleakError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

Row = Mapping[str, object]

DPI = 150
"""Plots are rendered at 150 dpi and shown at 96 px per inch, so they stay sharp on HiDPI."""
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")

METRIC_LABELS = {
    "psnr": "PSNR (dB)",
    "ssim": "SSIM",
    "mse": "MSE",
    "label_accuracy": "label accuracy",
    "seconds": "seconds",
    "iterations": "iterations",
}
_LOG_METRICS = {"mse"}

_MISSING = {"", "none", "null", "nan", "n/a"}


def number(value: object) -> float:
    """A cell as a float; empty, None, 'None', 'null' and unparsable text become NaN."""
    if value is None or isinstance(value, bool):
        return math.nan if value is None else float(value)
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    if text.lower() in _MISSING:
        return math.nan
    try:
        return float(text)
    except ValueError:
        return math.nan


def _figure(width: float = 5.4, height: float = 3.4, ncols: int = 1) -> tuple[Figure, list]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, ncols, squeeze=False)[0]
    for ax in axes:
        ax.grid(True, which="major", alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
    return figure, list(axes)


def figure_png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _no_data(ax, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="#666")
    ax.set_xticks([])
    ax.set_yticks([])


def _series(rows: Sequence[Row], column: str) -> list[tuple[str | None, list[float], list[float]]]:
    """(label, iterations, values) per curve, dropping rows where either is missing.

    The batched engine logs one row per iteration (the best trial's value): one curve.
    Trials run one after another (L-BFGS restarts) restart the iteration count: one curve
    per trial then.
    """
    points = [(number(r.get("iteration")), number(r.get(column)), r.get("trial")) for r in rows]
    iterations = [p[0] for p in points if not math.isnan(p[0])]
    sequential = any(b < a for a, b in zip(iterations, iterations[1:], strict=False))
    groups: dict[str | None, tuple[list[float], list[float]]] = {}
    for iteration, value, trial in points:
        if math.isnan(iteration) or not math.isfinite(value):
            continue
        key = f"trial {_label(trial)}" if sequential else None
        xs, ys = groups.setdefault(key, ([], []))
        xs.append(iteration)
        ys.append(value)
    return [(key, xs, ys) for key, (xs, ys) in groups.items()]


def _label(value: object) -> str:
    as_float = number(value)
    if math.isfinite(as_float) and as_float == int(as_float):
        return str(int(as_float))
    return str(value)


def has_column(rows: Iterable[Row], column: str) -> bool:
    """Whether any row holds a finite number in `column`."""
    return any(math.isfinite(number(r.get(column))) for r in rows)


def _plot_curves(ax, curves, log_y: bool) -> None:
    for i, (label, xs, ys) in enumerate(curves):
        marker = "o" if len(xs) <= 30 else None
        ax.plot(xs, ys, color=COLORS[i % len(COLORS)], marker=marker, ms=3, lw=1.5, label=label)
    if log_y and all(y > 0 for _, _, ys in curves for y in ys):
        log_y_axis(ax, [y for _, _, ys in curves for y in ys])
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if any(label is not None for label, _, _ in curves):
        ax.legend(fontsize="small", frameon=False)
    ax.set_xlabel("iteration")


def log_y_axis(ax, values: Sequence[float]) -> None:
    """Log y axis with plain tick labels; minor ticks labelled when the range is narrow."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.set_yscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(plain)
    narrow = max(values) / min(values) < 30
    ax.yaxis.set_minor_formatter(plain if narrow else NullFormatter())


def loss_curve_png(history_rows: Sequence[Row]) -> bytes:
    """Matching loss against iteration (log scale when all losses are positive)."""
    figure, (ax,) = _figure()
    curves = _series(history_rows, "loss")
    if curves:
        _plot_curves(ax, curves, log_y=True)
        ax.set_ylabel("matching loss")
        ax.set_title("Matching loss (what the attacker minimises)", fontsize="medium")
    else:
        _no_data(ax, "no matching loss recorded")
    return figure_png(figure)


def quality_curves_png(history_rows: Sequence[Row]) -> bytes:
    """PSNR and MSE against iteration, one panel per column present (evaluation side)."""
    columns = [c for c in ("psnr", "mse") if has_column(history_rows, c)]
    figure, axes = _figure(width=5.4 if len(columns) < 2 else 10.0, ncols=max(1, len(columns)))
    if not columns:
        _no_data(axes[0], "no PSNR or MSE recorded")
        return figure_png(figure)
    for ax, column in zip(axes, columns, strict=True):
        _plot_curves(ax, _series(history_rows, column), log_y=column in _LOG_METRICS)
        ax.set_ylabel(METRIC_LABELS[column])
        ax.set_title(f"{METRIC_LABELS[column]} of the best iterate", fontsize="medium")
    return figure_png(figure)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and population standard deviation, as in the sweep's summary.csv (NaN if empty)."""
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.pstdev(values)


def axis_plot_png(
    rows: Sequence[Row],
    axis: str,
    metric: str = "psnr",
    values: Sequence[object] | None = None,
) -> bytes:
    """Mean ± population std of `metric` for each value of a swept `axis`, over result rows.

    One series per attack when the rows hold several attacks (and the axis is not the
    attack itself). `values` fixes the order on the x axis (e.g. the spec's order); values
    seen in the rows but not listed there follow in order of appearance.
    """
    if not rows:
        raise GradleakError(f"no result rows to plot against {axis!r}")
    if not any(axis in r for r in rows):
        raise GradleakError(f"result rows have no column {axis!r}; cannot plot against it")
    order = [str(v) for v in values] if values is not None else []
    for r in rows:
        key = str(r.get(axis, ""))
        if key not in order:
            order.append(key)
    attacks: list[str] = []
    for r in rows:
        name = str(r.get("attack", ""))
        if name not in attacks:
            attacks.append(name)
    by_attack = axis != "attack" and len(attacks) > 1
    series_names = attacks if by_attack else [None]

    figure, (ax,) = _figure(width=max(5.0, min(10.0, 2.0 + 0.9 * len(order))))
    n_series = len(series_names)
    width = 0.6 / n_series if n_series > 1 else 0.0
    plotted = False
    for i, name in enumerate(series_names):
        xs, means, stds = [], [], []
        for j, key in enumerate(order):
            cell_values = [
                number(r.get(metric))
                for r in rows
                if str(r.get(axis, "")) == key and (name is None or str(r.get("attack")) == name)
            ]
            finite = [v for v in cell_values if math.isfinite(v)]
            if not finite:
                continue
            mean, std = mean_std(finite)
            xs.append(j + (i - (n_series - 1) / 2) * width)
            means.append(mean)
            stds.append(std)
        if not xs:
            continue
        plotted = True
        ax.errorbar(
            xs,
            means,
            yerr=stds,
            color=COLORS[i % len(COLORS)],
            marker="o",
            ms=6,
            linestyle="none",  # the values are categories: no trend lines between them
            elinewidth=1.5,
            capsize=5,
            label=name,
        )
    label = METRIC_LABELS.get(metric, metric)
    if not plotted:
        _no_data(ax, f"no {label} values to plot")
        return figure_png(figure)
    ax.set_xticks(range(len(order)), order, rotation=30 if len(order) > 6 else 0)
    ax.set_xlim(-0.5, len(order) - 0.5)
    ax.set_xlabel(axis)
    ax.set_ylabel(label)
    finite = [v for v in (number(r.get(metric)) for r in rows) if math.isfinite(v)]
    if metric in _LOG_METRICS and all(v > 0 for v in finite):
        log_y_axis(ax, finite)
    ax.set_title(f"{label} by {axis} (mean ± std over cells)", fontsize="medium")
    if by_attack:
        ax.legend(title="attack", fontsize="small", frameon=False)
    return figure_png(figure)
