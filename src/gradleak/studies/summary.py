"""Per-setting summaries: rows grouped by the keys that name a setting, with the statistics a
study reports for each group.

This module works on rows, whatever produced them, so it stands apart from the cell store
(studies/cells.py): the sweep and the comparison summarise the rows of their finished cells,
and the trade-off summarises a sweep's rows again, per attack × defense.

A statistic is a function of a group's rows. Most read one key and skip the values that do
not count: with `finite`, None, booleans, NaN and infinities are missing; with `present`,
only None is.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

Row = Mapping[str, Any]
Stat = Callable[[Sequence[Row]], Any]
Values = Callable[[Iterable[Any]], list[float]]


def finite(values: Iterable[Any]) -> list[float]:
    """The values that are finite numbers, as floats (None, bools, NaN and ±inf are skipped)."""
    out = []
    for value in values:
        if value is None or isinstance(value, bool):
            continue
        number = float(value)
        if math.isfinite(number):
            out.append(number)
    return out


def present(values: Iterable[Any]) -> list[float]:
    """The values that are not None, as floats."""
    return [float(value) for value in values if value is not None]


def of(reduce: Callable[[list[float]], float], key: str, values: Values = finite) -> Stat:
    """A statistic: `reduce` over the group's values of `key` that count.

    Args:
        reduce: e.g. statistics.fmean, statistics.pstdev, statistics.median.
        key: the row key to read; a row without it counts as None.
        values: which values count (`finite` or `present`).

    Returns:
        A function of a group's rows giving the reduced value, or None when none counts.
    """

    def stat(rows: Sequence[Row]) -> float | None:
        counted = values(row.get(key) for row in rows)
        return reduce(counted) if counted else None

    return stat


def share_at_least(key: str, threshold: float, values: Values = finite) -> Stat:
    """A statistic: the share of the group's rows whose `key` counts and is ≥ `threshold`.

    The share is of all rows, so a row whose value does not count is a row below.

    Args:
        key: the row key to read.
        threshold: the lowest value that counts as reached.
        values: which values count (`finite` or `present`).

    Returns:
        A function of a group's (non-empty) rows giving a number in [0, 1].
    """

    def stat(rows: Sequence[Row]) -> float:
        return sum(v >= threshold for v in values(row.get(key) for row in rows)) / len(rows)

    return stat


def summarise_groups(
    rows: Iterable[Row], by: Sequence[str], stats: Mapping[str, Stat]
) -> list[dict[str, Any]]:
    """One row per setting: the rows grouped by their values of `by`, then summarised.

    Args:
        rows: the rows to summarise, each holding every key of `by`.
        by: the keys that name a setting.
        stats: column name → statistic of the group's rows (`len` counts them).

    Returns:
        Per group, in the order its first row came: the `by` values, then each statistic.
    """
    groups: dict[tuple[Any, ...], list[Row]] = {}
    for row in rows:
        groups.setdefault(tuple(row[key] for key in by), []).append(row)
    return [
        {
            **dict(zip(by, setting, strict=True)),
            **{column: stat(members) for column, stat in stats.items()},
        }
        for setting, members in groups.items()
    ]


# The keys that name one setting of a sweep.
SWEEP_SETTING = ("attack", "model", "defense", "protocol")


def sweep_summary(rows: Sequence[Row], success_psnr: float) -> list[dict[str, Any]]:
    """A sweep's summary: per setting (attack, model, defense, protocol), mean ± std of PSNR
    and SSIM, mean label accuracy and the success rate.

    Args:
        rows: the sweep's results rows (one per cell).
        success_psnr: the PSNR (dB) from which a cell counts as a success.

    Returns:
        One row per setting, in the order of the rows; statistics over finite scores only
        (None where a setting has none), the success rate over all of its cells.
    """
    stats = {
        "cells": len,
        "psnr_mean": of(statistics.fmean, "psnr"),
        "psnr_std": of(statistics.pstdev, "psnr"),
        "ssim_mean": of(statistics.fmean, "ssim"),
        "ssim_std": of(statistics.pstdev, "ssim"),
        "label_accuracy_mean": of(statistics.fmean, "label_accuracy"),
        "success_rate": share_at_least("psnr", success_psnr),
    }
    return summarise_groups(rows, SWEEP_SETTING, stats)
