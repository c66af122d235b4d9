"""Scoring recovered labels, the evaluation loop, and the `gradleak labels` handler."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import pytest
import torch

from gradleak.cli.labels import add_labels
from gradleak.core.errors import GradleakError
from gradleak.studies.labels import check_strategies, evaluate_label_recovery, score_labels

pytestmark = pytest.mark.usefixtures("one_thread")


def test_score_of_a_hand_made_prediction() -> None:
    true = torch.tensor([0, 0, 0, 1, 2, 2])  # counts 3, 1, 2
    predicted = torch.tensor([0, 0, 2, 2, 2, 3])  # counts 2, 0, 3, 1
    score = score_labels(predicted, true, num_classes=5)
    assert not score.set_exact
    assert score.precision == pytest.approx(2 / 3)  # {0, 2, 3} ∩ {0, 1, 2} = {0, 2}
    assert score.recall == pytest.approx(2 / 3)
    assert score.count_accuracy == pytest.approx((2 + 0 + 2) / 6)  # Σ min(pred, true) / B


def test_score_of_a_reordered_exact_prediction() -> None:
    score = score_labels(torch.tensor([2, 1, 1]), torch.tensor([1, 2, 1]), num_classes=3)
    assert (score.set_exact, score.precision, score.recall, score.count_accuracy) == (
        True,
        1.0,
        1.0,
        1.0,
    )


def test_score_refuses_a_wrong_number_of_labels() -> None:
    with pytest.raises(GradleakError, match="give one label per sample"):
        score_labels(torch.tensor([1]), torch.tensor([1, 2]), num_classes=3)


def test_only_label_free_strategies_are_evaluated() -> None:
    with pytest.raises(GradleakError, match="'known' cannot be evaluated alone"):
        check_strategies(["sign", "known"])


def test_evaluation_rows_and_analytic_only_at_batch_one(shared_data: Path) -> None:
    rows = evaluate_label_recovery(
        "lenet", "mnist", shared_data / "mnist", batch_sizes=(1, 4), batches=3
    )
    keys = [(r.strategy, r.batch_size) for r in rows]
    assert ("analytic", 1) in keys and ("analytic", 4) not in keys
    assert {("sign", 4), ("yin", 4), ("count", 4)} <= set(keys)
    assert all(0.0 <= r.count_accuracy <= 1.0 and r.batches == 3 for r in rows)
    # One sample: the negative class is the label (iDLG), so every strategy is exact.
    assert all(r.set_exact == 1.0 for r in rows if r.batch_size == 1)


def test_labels_handler_writes_csv_and_markdown(shared_data: Path, tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_labels(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["labels", "--model", "lenet", "--dataset", "mnist", "--data-root",
         str(shared_data / "mnist"), "--batch-sizes", "2", "--batches", "2",
         "--strategies", "sign,count", "--out", str(tmp_path)]
    )  # fmt: skip
    assert args.handler(args) == 0
    with (tmp_path / "labels.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["strategy"] for r in rows] == ["sign", "count"]
    assert "| count acc |" in (tmp_path / "labels.md").read_text()
