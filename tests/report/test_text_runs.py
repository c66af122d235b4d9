"""HTML reports of text runs and text sweeps, from run directories written here in the shape a
text run writes (metrics.json with the text scores and `per_sequence`, sentences.txt, no
pictures); and a sweep that holds image and text cells."""

from __future__ import annotations

import csv
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from gradleak.cli.app import main
from gradleak.metrics.text import TEXT_CONVENTION
from gradleak.modalities import get_modality
from gradleak.report.html import write_report, write_run_report, write_sweep_report
from gradleak.report.text import TEXT_DIFF_CSS

TEXT = get_modality("text")

# Two sentences: the first recovered exactly, the second with "cat" lost and "sat"/"the"
# swapped; ROUGE values as rouge-score gives them for these pairs are not needed here, only
# that the page shows what metrics.json holds.
PAIRS = [
    ("a quiet river runs", "a quiet river runs", True),
    ("the cat sat on the mat", "the sat the on mat dog", False),
]


def text_metrics(exact_match: float = 0.5, rouge_l: float = 0.7, **changes: object) -> dict:
    """A text run's metrics.json, shaped as `scenario/outputs.py` writes it."""
    per_sequence = [
        {
            "index": i,
            "matched_reconstruction": i,
            "truth": truth,
            "recovered": recovered,
            "token_accuracy": 1.0 if exact else 0.5,
            "exact": exact,
            "rouge1": 1.0 if exact else 0.8,
            "rouge2": 1.0 if exact else 0.2,
            "rougeL": 1.0 if exact else 0.4,
        }
        for i, (truth, recovered, exact) in enumerate(PAIRS)
    ]
    metrics = {
        "attack": "span",
        "model": "bert-tiny",
        "modality": "text",
        "dataset": "text",
        "source": "sentence(s) 0–1 of the bundled sentences",
        "batch_size": 2,
        "protocol": "fedsgd",
        "defenses": [],
        "seed": 0,
        "exact_match": exact_match,
        "token_accuracy": 0.75,
        "token_recall": 0.9,
        "token_precision": 0.8125,
        "rouge1": 0.9,
        "rouge2": 0.6,
        "rougeL": rouge_l,
        "label_accuracy": None,
        "per_sequence": per_sequence,
        "iterations": 0,
        "loss_evaluations": 0,
        "seconds": 0.25,
        "stopped_at_psnr": None,
        "matching_loss": float("nan"),
        "label_strategy": "given",
        "recovered_labels": [0, 1],
        "true_labels": [0, 1],
        "matching": [0, 1],
        "interrupted": False,
        "status": "ok",
        "status_reason": "",
        "threat_model": {
            "data_shape": [8, 64],
            "num_classes": 2,
            "batch_size": 2,
            "mean": [],
            "std": [],
            "labels_known": True,
            "modality": "text",
            "sequence_lengths": "not granted (padded length only)",
        },
        "convention": TEXT_CONVENTION,
    }
    metrics.update(changes)
    return metrics


def write_text_run(path: Path, metrics: dict | None = None) -> Path:
    """A text run directory: metrics.json, sentences.txt, config.yaml and an empty history."""
    path.mkdir(parents=True, exist_ok=True)
    metrics = text_metrics() if metrics is None else metrics
    (path / "metrics.json").write_text(json.dumps(metrics))
    blocks = [f"original:  {t}\nrecovered: {r}\n\n" for t, r, _ in PAIRS]
    (path / "sentences.txt").write_text("".join(blocks))
    (path / "config.yaml").write_text("run:\n  attack: span\n  modality: text\n")
    (path / "history.csv").write_text("iteration,trial,loss\n")
    return path


class Spans(HTMLParser):
    """The class and text of every <span>, and every tag's name."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.spans: list[tuple[str, str]] = []
        self.tags: list[str] = []
        self._open: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs) -> None:
        self.tags.append(tag)
        if tag == "span":
            self._open.append(dict(attrs).get("class") or "")
            self.spans.append((self._open[-1], ""))

    def handle_endtag(self, tag) -> None:
        if tag == "span" and self._open:
            self._open.pop()

    def handle_data(self, data) -> None:
        if self._open and self.spans:
            cls, text = self.spans[-1]
            self.spans[-1] = (cls, text + data)


def _section(html: str, name: str) -> str:
    start = html.index(f'<section id="{name}"')
    return html[start : html.index("</section>", start)]


def _text(fragment: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", fragment).split())


# --------------------------------------------------------------------------------- run page


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return write_text_run(tmp_path / "run")


def test_text_run_page_shows_the_text_scores(run_dir: Path) -> None:
    html = write_run_report(run_dir).read_text(encoding="utf-8")
    header = _text(html[: html.index("<section")])
    assert "span on bert-tiny" in header
    for label, value in [
        ("exact match", "0.50"),
        ("token accuracy", "0.750"),
        ("token recall", "0.900"),
        ("token precision", "0.812"),  # 0.8125 to three places
        ("ROUGE-1", "0.900"),
        ("ROUGE-2", "0.600"),
        ("ROUGE-L", "0.700"),
    ]:
        assert f"{label} {value}" in header
    assert "PSNR" not in header and "SSIM" not in header
    metrics = _text(_section(html, "metrics"))
    assert "exact match 0.50" in metrics and "ROUGE-L 0.700" in metrics
    assert "label accuracy n/a (labels given by the threat model, not scored)" in metrics
    assert "matching (reconstruction per truth sequence) 0, 1" in metrics
    assert "PSNR" not in metrics


def test_text_run_page_puts_each_sentence_above_the_recovered_one(run_dir: Path) -> None:
    html = write_run_report(run_dir).read_text(encoding="utf-8")
    assert 'id="grid"' not in html  # no picture to show
    sentences = _section(html, "sentences")
    assert sentences.count('<div class="text-diff">') == 2
    assert "sentence 0 · recovered exactly" in _text(sentences)
    assert "sentence 1 · differs" in _text(sentences)
    spans = Spans(sentences).spans
    first = [(c, t) for c, t in spans if c.startswith("tok-")][:4]
    assert first == [("tok-right", w) for w in ["a", "quiet", "river", "runs"]]
    # The second pair by token_diff's rule: positions 0 and 3 agree, "sat", the second "the"
    # and "mat" were recovered elsewhere, "cat" was not, and "dog" is not in the original.
    second = [(c, t) for c, t in spans if c.startswith("tok-")][4:]
    assert second == [
        ("tok-right", "the"),
        ("tok-missing", "cat"),
        ("tok-moved", "sat"),
        ("tok-right", "on"),
        ("tok-moved", "the"),
        ("tok-moved", "mat"),
        ("tok-extra", "dog"),
    ]
    assert TEXT_DIFF_CSS.splitlines()[0] in html  # the diff is styled


def test_text_run_page_escapes_the_sentences(tmp_path: Path) -> None:
    metrics = text_metrics()
    metrics["per_sequence"][1]["truth"] = "<script>alert(1)</script> & co"
    html = write_run_report(write_text_run(tmp_path / "run", metrics)).read_text()
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_text_run_page_per_sequence_scores_threat_model_and_convention(run_dir: Path) -> None:
    html = write_run_report(run_dir).read_text(encoding="utf-8")
    metrics = _text(_section(html, "metrics"))
    assert "Per sequence" in metrics
    assert "truth sequence matched reconstruction token acc. exact ROUGE-1" in metrics
    assert "1 1 0.500 no 0.800 0.200 0.400" in metrics  # the second sequence's row
    threat = _text(_section(html, "threat-model"))
    assert "data shape (padded length × hidden size) 8×64" in threat
    assert "modality text" in threat
    assert "labels known to the attacker yes" in threat
    assert " ".join(TEXT_CONVENTION.split()) in _text(_section(html, "convention"))


def test_text_run_page_is_self_contained(run_dir: Path) -> None:
    html = write_run_report(run_dir).read_text(encoding="utf-8")
    tags = Spans(html).tags
    assert not {"script", "link", "iframe", "img"} & set(tags)
    assert "http:" not in html and "https:" not in html


def test_text_snapshots_are_shown_as_text(run_dir: Path) -> None:
    (run_dir / "snapshots").mkdir()
    (run_dir / "snapshots" / "iter_000000.txt").write_text("river a\nsat the\n")
    (run_dir / "snapshots" / "iter_000007.txt").write_text("a quiet river runs\nthe sat\n")
    index = [
        {"iteration": 0, "file": "snapshots/iter_000000.txt"},
        {"iteration": 7, "file": "snapshots/iter_000007.txt"},
        {"iteration": 9, "file": "snapshots/iter_000009.txt"},  # missing
    ]
    (run_dir / "snapshots.json").write_text(json.dumps(index))
    metrics = text_metrics(iterations=7)
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    html = write_run_report(run_dir).read_text(encoding="utf-8")
    snapshots = _text(_section(html, "snapshots"))
    assert "river a sat the iteration 0" in snapshots
    assert "a quiet river runs the sat iteration 7 (final)" in snapshots
    assert "1 snapshot file(s) listed in snapshots.json are missing" in snapshots


def test_masked_language_modelling_labels_are_summarised(tmp_path: Path) -> None:
    labels = [[-100, 2023, -100, -100], [-100, -100, 3899, -100]]
    metrics = text_metrics(true_labels=labels, recovered_labels=[])
    html = write_run_report(write_text_run(tmp_path / "run", metrics)).read_text()
    assert "true labels 2×4 token labels (masked-language modelling)" in _text(
        _section(html, "metrics")
    )


def test_gradleak_report_writes_a_text_runs_page(run_dir: Path, capsys) -> None:
    assert main(["report", str(run_dir)]) == 0
    assert f"report written to {run_dir / 'report.html'}" in capsys.readouterr().out
    assert 'id="sentences"' in (run_dir / "report.html").read_text()


# ------------------------------------------------------------------------------- sweep page

# (attack, image index, exact match, ROUGE-L) of a text sweep's cells.
TEXT_CELLS = [
    ("tokens", 0, 0.0, 0.35),
    ("tokens", 1, 0.0, 0.40),
    ("span", 0, 1.0, 1.00),
    ("span", 1, 0.5, 0.80),
]


def _write_csv(path: Path, rows: list[dict]) -> None:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def _text_cell_row(sweep: Path, attack: str, image: int, exact: float, rouge_l: float) -> dict:
    name = f"{attack}__bert-tiny__none__fedsgd__img{image}__s0"
    write_text_run(sweep / "cells" / name, text_metrics(exact, rouge_l, attack=attack))
    return {
        "cell": name,
        "attack": attack,
        "model": "bert-tiny",
        "defense": "none",
        "protocol": "fedsgd",
        "modality": "text",
        "image": image,
        "seed": 0,
        "status": "ok",
        "exact_match": exact,
        "token_accuracy": 0.5,
        "token_recall": 0.9,
        "token_precision": 0.8,
        "rouge1": 0.9,
        "rouge2": 0.5,
        "rougeL": rouge_l,
        "label_accuracy": "",
        "seconds": 0.1,
        "iterations": 0,
        "run_dir": f"cells/{name}",
    }


@pytest.fixture
def text_sweep(tmp_path: Path) -> Path:
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    spec = {
        "name": "text",
        "base": {"modality": "text", "batch_size": 2},
        "axes": {
            "attack": ["tokens", "span"],
            "model": ["bert-tiny"],
            "defense": ["none"],
            "protocol": ["fedsgd"],
            "image": [0, 1],
            "seed": [0],
        },
        "success_psnr": 20.0,
    }
    (sweep / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    _write_csv(sweep / "results.csv", [_text_cell_row(sweep, *cell) for cell in TEXT_CELLS])
    return sweep


def test_text_sweep_page_counts_exact_recoveries_as_successes(text_sweep: Path) -> None:
    html = write_sweep_report(text_sweep).read_text(encoding="utf-8")
    header = _text(html[: html.index("<section")])
    assert "success threshold every sequence recovered exactly" in header
    assert "PSNR" not in header
    assert "successful cells 1 of 4" in header  # only span on image 0 has exact match 1


def test_text_sweep_page_summary_from_results(text_sweep: Path) -> None:
    html = write_sweep_report(text_sweep).read_text(encoding="utf-8")
    summary = _text(_section(html, "summary"))
    assert "computed from results.csv" in summary
    assert "exact match mean" in summary and "rougeL mean" in summary and "psnr" not in summary
    # span: exact match 1.0 and 0.5 → mean 0.75 ± 0.25, success rate 0.5; tokens: 0 and 0.
    assert "tokens bert-tiny none fedsgd text 2 0 0 0 0.00 0.00" in summary
    assert "span bert-tiny none fedsgd text 2 0 0 0 0.75 0.25" in summary
    assert summary.split(" span ")[0].endswith("0.375 0.025 n/a 0.00")  # ROUGE-L, success
    assert "0.900 0.100 n/a 0.50 summary.csv is missing" in summary


def test_text_sweep_page_ranks_and_plots_by_rouge_l(text_sweep: Path) -> None:
    html = write_sweep_report(text_sweep).read_text(encoding="utf-8")
    best = _section(html, "best")
    names = re.findall(r"<h4>(.*?)</h4>", best)
    assert names == [
        "span__bert-tiny__none__fedsgd__img0__s0",
        "span__bert-tiny__none__fedsgd__img1__s0",
    ]
    assert "ROUGE-L 1.000 · exact match 1.00" in _text(best)
    assert "tok-right" in best and "tok-missing" in _section(html, "worst")
    plots = re.findall(r'data-axis="(\w+)" data-score="(\w+)"', html)
    assert plots == [("attack", "rougeL"), ("image", "rougeL")]
    assert "ROUGE-L by swept axis" in html
    assert " ".join(TEXT_CONVENTION.split()) in _text(_section(html, "convention"))


def test_a_sweep_of_images_and_text_shows_each_with_its_own_scores(
    text_sweep: Path, tmp_path: Path
) -> None:
    rows = list(csv.DictReader((text_sweep / "results.csv").open()))
    image_rows = [
        {
            "cell": f"dlg__lenet__none__fedsgd__img{i}__s0",
            "attack": "dlg",
            "model": "lenet",
            "defense": "none",
            "protocol": "fedsgd",
            "modality": "image",
            "image": i,
            "seed": 0,
            "status": "ok",
            "psnr": psnr,
            "ssim": 0.5,
            "mse": 0.01,
            "label_accuracy": 1.0,
            "seconds": 1.0,
            "iterations": 5,
            "run_dir": f"cells/dlg__lenet__none__fedsgd__img{i}__s0",
        }
        for i, psnr in enumerate((25.0, 12.0))
    ]
    _write_csv(text_sweep / "results.csv", image_rows + rows)
    (text_sweep / "spec.yaml").unlink()
    html = write_sweep_report(text_sweep).read_text(encoding="utf-8")
    header = _text(html[: html.index("<section")])
    assert "PSNR ≥ n/a" not in header
    assert "every sequence recovered exactly" in header
    # Without spec.yaml there is no PSNR threshold: only the text cells are judged.
    assert "successful cells 1 of 4" in header
    plots = re.findall(r'data-axis="(\w+)" data-score="(\w+)"', html)
    assert ("attack", "psnr") in plots and ("attack", "rougeL") in plots
    best = _text(_section(html, "best"))
    assert "image cells, by PSNR" in best and "text cells, by ROUGE-L" in best
    assert "PSNR 25.00 dB" in best and "ROUGE-L 1.000" in best
    summary = _text(_section(html, "summary"))
    assert "psnr mean" in summary and "exact match mean" in summary
    conventions = _text(_section(html, "convention"))
    assert conventions.startswith("Metric conventions image: Images are")
    assert "text: Token sequences" in conventions


def test_a_text_sweep_dir_is_reported_by_the_dispatcher(text_sweep: Path) -> None:
    copy = text_sweep.parent / "copy"
    shutil.copytree(text_sweep, copy)
    assert write_report(copy) == copy / "report.html"
