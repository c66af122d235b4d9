"""Per-setting summaries: rows grouped by the keys that name a setting, with the statistics a
study reports for each group.

This module works on rows, whatever produced them, so it stands apart from the cell store
(studies/cells.py): the sweep and the comparison summarise the rows of their finished cells,
and the trade-off summarises a sweep's rows again, per attack × defense.

A statistic is a function of a group's rows. Most read one key and skip the values that do
not count: with `finite`, None, booleans, NaN and infinities are missing; with `present`,
only None is. `among` restricts a statistic to the rows that pass a test, `counted` counts
them.

A row's `status` says how its run ended: `ok` (or no status: rows of runs that predate it),
`diverged` and `no-progress` (the attack's optimisation failed; the scores are those of its
starting point, not of an attack), or `failed` (the run raised an error and has no scores).
A sweep's summary averages the `ok` rows only and counts the others apart.
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


def among(keep: Callable[[Row], bool], stat: Stat) -> Stat:
    """A statistic over only the rows of the group that `keep` accepts."""

    def restricted(rows: Sequence[Row]) -> Any:
        return stat([row for row in rows if keep(row)])

    return restricted


def counted(keep: Callable[[Row], bool]) -> Stat:
    """A statistic: how many rows of the group `keep` accepts."""

    def count(rows: Sequence[Row]) -> int:
        return sum(1 for row in rows if keep(row))

    return count


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

# A row's `status` (see the module's docstring).
STATUS = "status"
OK = "ok"
FAILED = "failed"
# The statuses a sweep's summary counts apart from its scores, and their columns.
COUNTED_STATUSES = {FAILED: "failed", "diverged": "diverged", "no-progress": "no_progress"}


def status_of(row: Row) -> str:
    """A row's status; `ok` for a row without one."""
    return str(row.get(STATUS) or OK)


def scored(row: Row) -> bool:
    """Whether the row's scores are an attack result (its status is ok)."""
    return status_of(row) == OK


def ran(row: Row) -> bool:
    """Whether the row's run ended (every status but failed)."""
    return status_of(row) != FAILED


def sweep_summary(rows: Sequence[Row], success_psnr: float) -> list[dict[str, Any]]:
    """A sweep's summary: per setting (attack, model, defense, protocol), the cells, how many
    failed, diverged or made no progress, mean ± std of PSNR and SSIM, mean label accuracy
    and the success rate.

    Args:
        rows: the sweep's results rows (one per cell, each with its `status`).
        success_psnr: the PSNR (dB) from which a cell counts as a success.

    Returns:
        One row per setting, in the order of the rows. Scores are averaged over the `ok`
        cells' finite values only (None where there are none). The success rate is over the
        cells whose run ended (all but the failed ones): a diverged cell or one that made
        no progress is not a success; None when every cell failed.
    """
    stats: dict[str, Stat] = {"cells": len}
    for status, column in COUNTED_STATUSES.items():
        stats[column] = counted(lambda row, status=status: status_of(row) == status)
    stats |= {
        "psnr_mean": among(scored, of(statistics.fmean, "psnr")),
        "psnr_std": among(scored, of(statistics.pstdev, "psnr")),
        "ssim_mean": among(scored, of(statistics.fmean, "ssim")),
        "ssim_std": among(scored, of(statistics.pstdev, "ssim")),
        "label_accuracy_mean": among(scored, of(statistics.fmean, "label_accuracy")),
        "success_rate": among(ran, success_share(success_psnr)),
    }
    return summarise_groups(rows, SWEEP_SETTING, stats)


def success_share(success_psnr: float, values: Values = finite) -> Stat:
    """A statistic: the share of the rows whose run ended and reached `success_psnr`.

    A row that is not ok (diverged, no progress) counts as below; failed rows should be
    left out first (`among(ran, ...)`). None for no rows.
    """
    share = share_at_least("psnr", success_psnr, values)

    def stat(rows: Sequence[Row]) -> float | None:
        # A row that is not ok is one without a score: below the threshold.
        return share([r if scored(r) else {} for r in rows]) if rows else None

    return stat
