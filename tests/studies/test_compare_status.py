"""The attack comparison shows each run's status and averages only the runs that are ok."""

from __future__ import annotations

import pytest

from gradleak.studies.compare import CompareSpec, DatasetSource, summarise, summary_markdown


def _row(index: int, status: str | None, psnr: float) -> dict:
    row = {
        "dataset": "cifar10",
        "index": index,
        "attack": "dlg",
        "protocol": "fedsgd",
        "psnr": psnr,
        "ssim": 0.5,
        "mse": 0.01,
        "label_accuracy": 1.0,
        "iterations": 10,
        "seconds": 1.0,
        "matching_loss": 0.1,
        "run_dir": f"runs/cifar10/image-{index}/dlg-fedsgd",
    }
    if status is not None:
        row["status"] = status
    return row


ROWS = [_row(0, "ok", 30.0), _row(1, "diverged", 9.0), _row(2, "no-progress", 8.0)]


def test_scores_are_averaged_over_ok_runs_and_the_others_counted() -> None:
    (summary,) = summarise(ROWS)
    assert summary["images"] == 3
    assert (summary["diverged"], summary["no_progress"]) == (1, 1)
    assert summary["psnr_mean"] == pytest.approx(30.0)  # not dragged down by random starts
    assert summary["iterations_mean"] == pytest.approx(10.0)  # the time spent counts


def test_a_row_without_status_is_ok() -> None:
    (summary,) = summarise([_row(0, None, 20.0)])
    assert (summary["diverged"], summary["no_progress"], summary["psnr_mean"]) == (0, 0, 20.0)


def test_summary_markdown_shows_each_runs_status() -> None:
    spec = CompareSpec(datasets=(DatasetSource("cifar10"),), indices=(0, 1, 2))
    text = summary_markdown(spec, ROWS)
    assert "| 3 | 1 diverged, 1 no-progress | 30.00 ± 0.00 |" in text
    per_run = text.split("## Per run")[1]
    assert "| cifar10 | 1 | dlg | fedsgd | diverged | 9.00 |" in per_run
    assert "| cifar10 | 2 | dlg | fedsgd | no-progress | 8.00 |" in per_run
    assert "| cifar10 | 0 | dlg | fedsgd | ok | 30.00 |" in per_run
