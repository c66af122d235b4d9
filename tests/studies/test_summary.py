"""Per-setting summaries checked against values computed by hand."""

from __future__ import annotations

import math
import statistics

import pytest

from gradleak.studies.summary import finite, of, present, share_at_least, summarise_groups

NAN = float("nan")
ROWS = [
    {"attack": "dlg", "defense": "none", "psnr": 10.0, "labels": 1.0},
    {"attack": "idlg", "defense": "none", "psnr": 30.0, "labels": None},
    {"attack": "dlg", "defense": "none", "psnr": 20.0, "labels": 0.0},
    {"attack": "dlg", "defense": "prune", "psnr": None, "labels": True},
    {"attack": "dlg", "defense": "none", "psnr": NAN},
]


def test_groups_come_in_the_order_of_their_first_row_with_their_statistics() -> None:
    stats = {
        "cells": len,
        "psnr_mean": of(statistics.fmean, "psnr"),
        "psnr_std": of(statistics.pstdev, "psnr"),
        "psnr_median": of(statistics.median, "psnr"),
        "labels_mean": of(statistics.fmean, "labels"),
        "success": share_at_least("psnr", 15.0),
    }
    first, second, third = summarise_groups(ROWS, ("attack", "defense"), stats)
    # dlg/none: PSNR 10, 20 and NaN (skipped); labels 1, 0 and a missing key (skipped).
    assert first == {
        "attack": "dlg",
        "defense": "none",
        "cells": 3,
        "psnr_mean": 15.0,
        "psnr_std": 5.0,
        "psnr_median": 15.0,
        "labels_mean": 0.5,
        "success": pytest.approx(1 / 3),
    }
    assert (second["attack"], second["cells"], second["psnr_std"]) == ("idlg", 1, 0.0)
    assert second["labels_mean"] is None and second["success"] == 1.0
    # dlg/prune: no PSNR at all, and True is not a label accuracy.
    assert (third["defense"], third["psnr_mean"], third["labels_mean"]) == ("prune", None, None)
    assert third["success"] == 0.0


def test_finite_skips_none_bools_nan_and_infinities_present_skips_only_none() -> None:
    values = [1, None, True, NAN, math.inf, -math.inf, 2.5, "3"]
    assert finite(values) == [1.0, 2.5, 3.0]
    kept = present(values)
    assert kept[:2] == [1.0, 1.0] and math.isnan(kept[2])
    assert kept[3:] == [math.inf, -math.inf, 2.5, 3.0]


def test_statistics_over_present_values_count_infinity_as_reached() -> None:
    rows = [{"psnr": math.inf}, {"psnr": 10.0}, {"psnr": None}, {"psnr": 40.0}]
    assert share_at_least("psnr", 25.0, present)(rows) == 0.5
    assert share_at_least("psnr", 25.0)(rows) == 0.25  # finite: inf does not count
    assert of(statistics.median, "psnr", present)(rows) == 40.0
    assert of(statistics.median, "psnr")(rows) == 25.0


def test_no_rows_no_groups() -> None:
    assert summarise_groups([], ("attack",), {"cells": len}) == []
