"""Sweeps record cells that fail and go on, count runs that diverged apart, and run damaged
cells again."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

import gradleak.scenario.run as run_module
from gradleak.core.errors import GradleakError
from gradleak.studies.cells import FAILURE
from gradleak.studies.sweep.backends import LocalBackend
from gradleak.studies.sweep.runner import CELLS, run_sweep
from gradleak.studies.sweep.spec import SweepSpec, parse_spec

pytestmark = pytest.mark.usefixtures("one_thread")


def _spec(**extra: Any) -> SweepSpec:
    return parse_spec(
        {"attacks": ["idlg"], "images": [0, 1, 2], "options": {"idlg": {"iterations": 2}}, **extra}
    )


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _failing(monkeypatch: pytest.MonkeyPatch, errors: dict[int, Exception]) -> None:
    """Make the run of each image in `errors` raise that error."""
    real = run_module.run_attack

    def run_attack(config):  # type: ignore[no-untyped-def]
        if config.indices[0] in errors:
            raise errors[config.indices[0]]
        return real(config)

    monkeypatch.setattr(run_module, "run_attack", run_attack)


def test_a_failing_cell_is_recorded_the_sweep_goes_on_and_a_rerun_retries_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec, out = _spec(), tmp_path / "sweep"
    errors = {1: GradleakError("the data went away"), 2: RuntimeError("boom\nsecond line")}
    _failing(monkeypatch, errors)
    result = run_sweep(spec, out, progress=False, threads=1)

    assert (result.ran, result.failed, result.done, result.interrupted) == (3, 2, 1, False)
    rows = {row["image"]: row for row in _rows(out / "results.csv")}
    assert [rows[i]["status"] for i in "012"] == ["ok", "failed", "failed"]
    assert rows["1"]["status_reason"] == "the data went away" and rows["1"]["psnr"] == ""
    assert rows["2"]["status_reason"] == "RuntimeError: boom"
    failure = json.loads((out / CELLS / spec.cells()[2].name / FAILURE).read_text())
    assert failure["status"] == "failed" and "RuntimeError: boom" in failure["traceback"]
    (summary,) = _rows(out / "summary.csv")
    assert (summary["cells"], summary["failed"]) == ("3", "2")
    assert float(summary["psnr_mean"]) == pytest.approx(float(rows["0"]["psnr"]))
    markdown = (out / "summary.md").read_text()
    assert "| 2 failed |" in markdown
    assert f"- {spec.cells()[1].name}: the data went away" in markdown

    monkeypatch.undo()
    again = run_sweep(spec, out, progress=False, threads=1)
    assert (again.ran, again.skipped, again.failed, again.removed_partial) == (2, 1, 0, 0)
    assert [row["status"] for row in _rows(out / "results.csv")] == ["ok"] * 3
    assert not (out / CELLS / spec.cells()[2].name / FAILURE).exists()


@pytest.mark.slow  # two spawned worker processes import torch
def test_a_cell_that_fails_in_a_worker_process_is_recorded_there(tmp_path: Path) -> None:
    # The bundled image 1 is a ship (label 8): outside 4 classes, which only its run finds.
    spec = _spec(images=[0, 1], base={"num_classes": 4})
    result = run_sweep(spec, tmp_path, backend=LocalBackend(2), progress=False, threads=1)
    assert (result.ran, result.failed) == (2, 1)
    rows = _rows(tmp_path / "results.csv")
    assert [row["status"] for row in rows] == ["ok", "failed"]
    assert "label 8 is outside the 4 classes" in rows[1]["status_reason"]


def _set_metrics(out: Path, cell: str, **changes: Any) -> None:
    path = out / CELLS / cell / "metrics.json"
    metrics = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            metrics.pop(key)
        else:
            metrics[key] = value
    path.write_text(json.dumps(metrics))


def test_runs_that_diverged_or_made_no_progress_are_counted_apart_not_averaged(
    tmp_path: Path,
) -> None:
    spec, out = _spec(), tmp_path / "sweep"
    run_sweep(spec, out, progress=False, threads=1)
    names = [cell.name for cell in spec.cells()]
    _set_metrics(out, names[0], status=None)  # written before runs had a status: ok
    _set_metrics(out, names[1], status="diverged", status_reason="loss NaN", psnr=99.0)
    _set_metrics(out, names[2], status="no-progress", psnr=98.0)

    result = run_sweep(spec, out, progress=False, threads=1)
    assert (result.ran, result.skipped, result.not_scored, result.failed) == (0, 3, 2, 0)
    rows = _rows(out / "results.csv")
    assert [row["status"] for row in rows] == ["ok", "diverged", "no-progress"]
    assert rows[1]["status_reason"] == "loss NaN"
    (summary,) = _rows(out / "summary.csv")
    assert (summary["diverged"], summary["no_progress"], summary["failed"]) == ("1", "1", "0")
    assert float(summary["psnr_mean"]) == pytest.approx(float(rows[0]["psnr"]))
    assert float(summary["psnr_std"]) == 0.0
    assert float(summary["success_rate"]) == 0.0  # 98 and 99 dB are no successes
    assert "| 1 diverged, 1 no-progress |" in (out / "summary.md").read_text()


@pytest.mark.parametrize(
    "damage",
    ["truncated", "not json", "a list", "no psnr", "psnr is text", "status is a number", "gone"],
)
def test_a_finished_cell_with_damaged_metrics_runs_again(tmp_path: Path, damage: str) -> None:
    spec, out = _spec(images=[0, 1]), tmp_path / "sweep"
    run_sweep(spec, out, progress=False, threads=1)
    path = out / CELLS / spec.cells()[1].name / "metrics.json"
    whole = path.read_text()
    metrics = json.loads(whole)
    damaged = {
        "truncated": whole[: len(whole) // 2],
        "not json": "\x00\x01 garbage",
        "a list": "[1, 2]",
        "no psnr": json.dumps({k: v for k, v in metrics.items() if k != "psnr"}),
        "psnr is text": json.dumps({**metrics, "psnr": "high"}),
        "status is a number": json.dumps({**metrics, "status": 3}),
        "gone": None,
    }[damage]
    if damaged is None:
        path.unlink()
    else:
        path.write_text(damaged)

    result = run_sweep(spec, out, progress=False, threads=1)
    assert (result.ran, result.skipped, result.failed) == (1, 1, 0)
    assert json.loads(path.read_text())["psnr"] == pytest.approx(metrics["psnr"])
    assert [row["status"] for row in _rows(out / "results.csv")] == ["ok", "ok"]


def test_the_tables_are_replaced_whole(tmp_path: Path) -> None:
    spec, out = _spec(images=[0]), tmp_path / "sweep"
    run_sweep(spec, out, progress=False, threads=1)
    names = {path.name for path in out.iterdir()}
    assert {"results.csv", "summary.csv", "summary.md", "spec.yaml", "sweep.lock"} <= names
    assert not [name for name in names if "partial" in name]


def test_the_summary_averages_ok_cells_and_counts_each_other_status_apart() -> None:
    from gradleak.studies.summary import sweep_summary

    setting = {"attack": "a", "model": "m", "defense": "none", "protocol": "p"}
    rows = [
        {**setting, "status": "ok", "psnr": 30.0},
        {**setting, "psnr": 10.0},  # no status: a run from before statuses, ok
        {**setting, "status": "diverged", "psnr": 99.0},
        {**setting, "status": "no-progress", "psnr": 50.0},
        {**setting, "status": "failed", "psnr": None},
    ]
    (group,) = sweep_summary(rows, success_psnr=25)
    assert (group["cells"], group["failed"], group["diverged"], group["no_progress"]) == (
        5,
        1,
        1,
        1,
    )
    assert group["psnr_mean"] == 20.0 and group["psnr_std"] == 10.0
    assert group["success_rate"] == 1 / 4  # of the 4 cells that ran, only 30 dB counts
    (only_failed,) = sweep_summary([{**setting, "status": "failed"}], success_psnr=25)
    assert only_failed["success_rate"] is None and only_failed["psnr_mean"] is None
