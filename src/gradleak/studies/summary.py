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

A row's `modality` names the kind of data its run attacked (a row without one is an image
run: runs from before text recorded none). What a row scores, what a summary averages and
when a run counts as a success are its modality's (`Modality.scores`, `summary_scores`,
`success_rule`), so the studies never name a score themselves. A study that mixes
modalities gives each row the columns of its own modality and leaves the others empty.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from gradleak.modalities import MODALITIES, Modality, get_modality

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


MODALITY = "modality"
# The modality of a row that names none: runs from before text recorded none, and were images.
DEFAULT_MODALITY = "image"


def modality_of(row: Row) -> str:
    """The name of a row's modality; `DEFAULT_MODALITY` for a row without one."""
    return str(row.get(MODALITY) or DEFAULT_MODALITY)


def modalities_of(rows: Iterable[Row]) -> list[Modality]:
    """The modalities of `rows`, in the order of the registry (images first).

    Raises:
        GradleakError: a row names a modality gradleak does not know.
    """
    names = {modality_of(row) for row in rows}
    for name in names:
        get_modality(name)  # an unknown name is a one-line error naming the choices
    return [modality for name, modality in MODALITIES.items() if name in names]


def ordered_union(groups: Iterable[Iterable[str]]) -> list[str]:
    """Every name of `groups` once, in the order of its first occurrence."""
    return list(dict.fromkeys(name for group in groups for name in group))


def score_keys(modalities: Sequence[Modality]) -> list[str]:
    """The scores the rows of these modalities carry (results columns), each once."""
    return ordered_union(m.scores for m in modalities)


def summary_keys(modalities: Sequence[Modality]) -> list[str]:
    """The scores a summary gives as mean ± std for these modalities, each once."""
    return ordered_union(m.summary_scores for m in modalities)


def sweep_summary(
    rows: Sequence[Row], success_psnr: float, modalities: Sequence[Modality] | None = None
) -> list[dict[str, Any]]:
    """A sweep's summary: per setting (attack, model, defense, protocol), its modality, the
    cells, how many failed, diverged or made no progress, the mean ± std of each summarised
    score of the modalities (images: PSNR and SSIM), the mean label accuracy and the
    success rate.

    Args:
        rows: the sweep's results rows (one per cell, each with its `status` and
            `modality`).
        success_psnr: the PSNR (dB) from which an image cell counts as a success; each
            row is judged by its own modality's `success_rule`.
        modalities: the modalities whose scores are summarised (default: the rows' own).

    Returns:
        One row per setting, in the order of the rows. Scores are averaged over the `ok`
        cells' finite values only (None where there are none, e.g. the scores of another
        modality). The success rate is over the cells whose run ended (all but the failed
        ones): a diverged cell or one that made no progress is not a success; None when
        every cell failed.
    """
    if modalities is None:
        modalities = modalities_of(rows)
    stats: dict[str, Stat] = {MODALITY: lambda group: modality_of(group[0]), "cells": len}
    for status, column in COUNTED_STATUSES.items():
        stats[column] = counted(lambda row, status=status: status_of(row) == status)
    for key in summary_keys(modalities):
        stats[f"{key}_mean"] = among(scored, of(statistics.fmean, key))
        stats[f"{key}_std"] = among(scored, of(statistics.pstdev, key))
    stats |= {
        "label_accuracy_mean": among(scored, of(statistics.fmean, "label_accuracy")),
        "success_rate": among(ran, success_share(success_psnr)),
    }
    return summarise_groups(rows, SWEEP_SETTING, stats)


def succeeded(row: Row, success_psnr: float, values: Values = finite) -> bool:
    """Whether a row is a successful attack by its modality's rule (`success_rule`).

    A row that is not ok (diverged, no progress, failed) is none, and neither is one whose
    score does not count (see `values`).
    """
    if not scored(row):
        return False
    rule = get_modality(modality_of(row)).success_rule(success_psnr)
    counted = values([row.get(rule.score)])
    return bool(counted) and counted[0] >= rule.threshold


def success_share(success_psnr: float, values: Values = finite) -> Stat:
    """A statistic: the share of the rows that are successful attacks (`succeeded`).

    A row that is not ok (diverged, no progress) counts as no success; failed rows should
    be left out first (`among(ran, ...)`). None for no rows.
    """

    def stat(rows: Sequence[Row]) -> float | None:
        return sum(succeeded(r, success_psnr, values) for r in rows) / len(rows) if rows else None

    return stat
