"""HTML reports of a real run directory and a hand-built sweep directory; the plot helpers."""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from PIL import Image

from gradleak.core.errors import GradleakError
from gradleak.metrics import CONVENTION
from gradleak.modalities import get_modality
from gradleak.report.html import fmt, write_report, write_run_report, write_sweep_report
from gradleak.report.plots import axis_plot_png, loss_curve_png, quality_curves_png
from gradleak.scenario import RunConfig, run_attack
from gradleak.scenario.snapshots import SnapshotRecorder

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
VOID = {"img", "meta", "br", "hr", "link", "input"}

IMAGE_MODALITY = get_modality("image")


class Page(HTMLParser):
    """Collect tags, attributes and text per <section id=…> of a report."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.raw = html
        self.tags: list[tuple[str, dict[str, str], str | None]] = []  # (tag, attrs, section)
        self.text: dict[str | None, list[str]] = {}
        self._stack: list[tuple[str, str | None]] = []
        self._section: str | None = None
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs) -> None:
        attributes = {k: v or "" for k, v in attrs}
        if tag == "section":
            self._section = attributes.get("id")
        self.tags.append((tag, attributes, self._section))
        if tag not in VOID:
            self._stack.append((tag, self._section))

    def handle_endtag(self, tag) -> None:
        if tag == "section":
            self._section = None
        while self._stack and self._stack.pop()[0] != tag:
            pass

    def handle_data(self, data) -> None:
        self.text.setdefault(self._section, []).append(data)

    def section_text(self, section: str) -> str:
        return " ".join(" ".join(self.text.get(section, [])).split())

    def images(self, section: str | None = None) -> list[dict[str, str]]:
        return [a for t, a, s in self.tags if t == "img" and (section is None or s == section)]

    def texts_of(self, tag: str, section: str) -> list[str]:
        """Text of each `tag` element in a section, in order."""
        start = self.raw.index(f'<section id="{section}"')
        collect = _Collect(tag)
        collect.feed(self.raw[start : self.raw.index("</section>", start)])
        return [" ".join(s.split()) for s in collect.found]


class _Collect(HTMLParser):
    """The text inside each `tag` element (outermost level; nested same tags merge)."""

    def __init__(self, tag: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tag, self.found, self.depth = tag, [], 0

    def handle_starttag(self, tag, attrs) -> None:
        if tag == self.tag:
            if self.depth == 0:
                self.found.append("")
            self.depth += 1

    def handle_endtag(self, tag) -> None:
        if tag == self.tag:
            self.depth -= 1

    def handle_data(self, data) -> None:
        if self.depth:
            self.found[-1] += data


def _parse(path: Path) -> Page:
    return Page(path.read_text(encoding="utf-8"))


def _assert_self_contained(page: Page) -> None:
    for tag, attrs, _ in page.tags:
        assert tag not in ("link", "script", "iframe"), f"external resource tag <{tag}>"
        for name in ("src", "href"):
            value = attrs.get(name, "")
            assert not value.lower().startswith(("http:", "https:", "//")), value
    images = page.images()
    assert images
    for attrs in images:
        src = attrs["src"]
        assert src.startswith("data:image/png;base64,"), src[:40]
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert data.startswith(PNG_SIGNATURE)
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
            assert image.format == "PNG"


# ----------------------------------------------------------------------------- run report


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> Path:
    out = tmp_path_factory.mktemp("report") / "run"
    result = run_attack(
        RunConfig(attack="dlg", out=out, progress=False, attack_options={"iterations": 5})
    )
    final = result.case.server.decode(result.reconstruction.images)
    recorder = SnapshotRecorder([0, 2, 4])
    for iteration in range(1, result.reconstruction.iterations + 1):
        recorder.observe(iteration, final * iteration / 5)
    recorder.observe_final(result.reconstruction.iterations, final)
    recorder.save(out, IMAGE_MODALITY)
    return out


@pytest.fixture(scope="module")
def run_page(run_dir: Path) -> Page:
    path = write_run_report(run_dir)
    assert path == run_dir / "report.html"
    return _parse(path)


def test_run_report_is_self_contained(run_page: Page) -> None:
    _assert_self_contained(run_page)


def test_run_report_title_names_attack_model_and_source(run_dir: Path, run_page: Page) -> None:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    title = " ".join(run_page.text[None])
    assert "dlg on lenet" in title
    assert metrics["source"] in title


def test_run_report_metrics_table(run_dir: Path, run_page: Page) -> None:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    text = run_page.section_text("metrics")
    assert f"PSNR {metrics['psnr']:.2f} dB" in text
    assert f"SSIM {metrics['ssim']:.4f}" in text
    assert f"label accuracy {metrics['label_accuracy']:.2f}" in text
    assert f"iterations {metrics['iterations']}" in text
    assert "label strategy optimize" in text
    assert f"true labels {metrics['true_labels'][0]}" in text
    assert "interrupted no" in text
    assert "compile seconds" not in text  # only for compiled runs
    assert "Per image" in text
    if "defenses" in metrics:  # runs that record the client's defenses
        assert "client defenses none" in text


def test_run_report_grid_and_curves(run_page: Page) -> None:
    assert len(run_page.images("grid")) == 1
    grid = run_page.images("grid")[0]
    assert "pixels" in grid["class"]  # image-rendering: pixelated
    assert len(run_page.images("curves")) == 2  # loss; PSNR (history.csv has no MSE column)
    assert "image-rendering: pixelated" in run_page.raw


def test_run_report_snapshots_with_their_iterations(run_page: Page) -> None:
    captions = run_page.texts_of("figcaption", "snapshots")
    assert captions == ["iteration 1", "iteration 2", "iteration 4", "iteration 5 (final)"]
    assert len(run_page.images("snapshots")) == 4


def test_run_report_threat_model_config_and_convention(run_page: Page) -> None:
    assert "labels known to the attacker no" in run_page.section_text("threat-model")
    assert "data shape (C×H×W) 3×32×32" in run_page.section_text("threat-model")
    config = run_page.section_text("config")
    assert "name: dlg" in config
    assert "attack: dlg" in config
    assert " ".join(CONVENTION.split()) in run_page.section_text("convention")


def test_run_report_without_snapshots_and_with_missing_values(
    run_dir: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    shutil.rmtree(copy / "snapshots")
    (copy / "snapshots.json").unlink()
    metrics = json.loads((copy / "metrics.json").read_text())
    metrics.update(label_accuracy=None, ssim=None, compiled=True, compile_seconds=12.5)
    metrics.update(compile_cache_hits=1, compile_decision="auto: compiled, 900 evaluations")
    metrics["threat_model"]["labels_known"] = True
    metrics["per_image"][0]["ssim"] = None
    (copy / "metrics.json").write_text(json.dumps(metrics))
    # History with empty PSNR cells and an MSE column that is partly empty.
    (copy / "history.csv").write_text(
        "iteration,trial,loss,psnr,mse\n1,0,5.0,,\n2,0,2.5,11.0,0.08\n3,0,1.0,12.0,\n"
    )
    page = _parse(write_report(copy))
    _assert_self_contained(page)
    assert page.images("snapshots") == []
    assert "No snapshots were recorded" in page.section_text("snapshots")
    text = page.section_text("metrics")
    assert "SSIM n/a" in text
    assert "label accuracy n/a (labels given by the threat model" in text
    assert "compile seconds 12.5 s" in text
    assert "compiled graphs from the cache 1" in text
    assert "compile decision auto: compiled, 900 evaluations" in text
    assert "nan" not in text.lower().replace("n/a", "")
    assert len(page.images("curves")) == 2


def test_run_report_with_empty_history_and_no_grid(run_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (copy / "history.csv").write_text("")
    (copy / "grid.png").unlink()
    page = _parse(write_run_report(copy))
    assert page.images("curves") == [] and page.images("grid") == []
    assert "No history was recorded" in page.section_text("curves")
    assert "grid.png is missing" in page.section_text("grid")


# ----------------------------------------------------------------------------- sweep report

ATTACKS, DEFENSES, IMAGES = ("dlg", "idlg"), ("none", "noise"), (0, 1)


def _write_csv(path: Path, rows: list[dict[str, object]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture(scope="module")
def sweep_dir(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    sweep = tmp_path_factory.mktemp("sweep")
    spec = {
        "axes": {
            "attack": list(ATTACKS),
            "model": ["lenet"],
            "defense": list(DEFENSES),
            "protocol": ["fedsgd"],
            "image": list(IMAGES),
            "seed": [0],
        },
        "success_psnr": 20.0,
    }
    (sweep / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    results = []
    for n, (attack, defense, image) in enumerate(
        (a, d, i) for a in ATTACKS for d in DEFENSES for i in IMAGES
    ):
        cell = f"{attack}-lenet-{defense}-fedsgd-img{image}-s0"
        shutil.copytree(run_dir, sweep / "cells" / cell)
        results.append(
            {
                "cell": cell,
                "attack": attack,
                "model": "lenet",
                "defense": defense,
                "protocol": "fedsgd",
                "image": image,
                "seed": 0,
                "psnr": 10.0 + 3.1 * ((n * 5) % 8),  # distinct values, not in cell order
                "ssim": 0.5,
                "mse": 0.01,
                "label_accuracy": "" if attack == "dlg" else 1.0,
                "seconds": 1.5,
                "iterations": 5,
                "run_dir": f"cells/{cell}",
            }
        )
    _write_csv(sweep / "results.csv", results)
    summary = [
        {
            "attack": attack,
            "model": "lenet",
            "defense": defense,
            "protocol": "fedsgd",
            "cells": 2,
            "psnr_mean": 20.0 + k + 0.123,
            "psnr_std": 1.5 + k,
            "ssim_mean": 0.5,
            "ssim_std": 0.0,
            "label_accuracy_mean": "" if attack == "dlg" else 1.0,
            "success_rate": 0.5,
        }
        for k, (attack, defense) in enumerate((a, d) for a in ATTACKS for d in DEFENSES)
    ]
    _write_csv(sweep / "summary.csv", summary)
    return sweep


@pytest.fixture(scope="module")
def sweep_page(sweep_dir: Path) -> Page:
    path = write_report(sweep_dir)
    assert path == sweep_dir / "report.html"
    return _parse(path)


def _results(sweep_dir: Path) -> list[dict[str, str]]:
    with (sweep_dir / "results.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_sweep_report_is_self_contained(sweep_page: Page) -> None:
    _assert_self_contained(sweep_page)


def test_sweep_report_summary_values(sweep_page: Page) -> None:
    text = sweep_page.section_text("summary")
    for k in range(4):
        assert f"{20.0 + k + 0.123:.2f}" in text
        assert f"{1.5 + k:.2f}" in text
    assert "n/a" in text  # dlg's label accuracy is empty
    assert "dlg lenet none fedsgd 2" in text  # the defense named none is not a missing value
    assert "psnr mean" in text and "success rate" in text


def test_sweep_report_axes(sweep_page: Page) -> None:
    text = sweep_page.section_text("axes")
    assert "attack dlg, idlg yes" in text
    assert "model lenet no" in text
    assert "defense none, noise yes" in text
    assert "image 0, 1 yes" in text


def test_sweep_report_counts(sweep_page: Page, sweep_dir: Path) -> None:
    header = " ".join(sweep_page.text[None])
    assert "cells finished 8 of 8" in " ".join(header.split())
    assert "PSNR ≥ 20 dB" in header
    successes = sum(float(r["psnr"]) >= 20 for r in _results(sweep_dir))
    assert f"successful cells {successes} of 8" in " ".join(header.split())


def test_sweep_report_one_plot_per_swept_axis(sweep_page: Page) -> None:
    plots = [
        a for t, a, _ in sweep_page.tags if t == "figure" and "axis-plot" in a.get("class", "")
    ]
    assert [p["data-axis"] for p in plots] == ["attack", "defense", "image"]
    assert len(sweep_page.images("axis-plots")) == 3


def test_sweep_report_best_and_worst_by_psnr(sweep_page: Page, sweep_dir: Path) -> None:
    ranked = sorted(_results(sweep_dir), key=lambda r: float(r["psnr"]), reverse=True)
    best = sweep_page.texts_of("h4", "best")
    worst = sweep_page.texts_of("h4", "worst")
    assert best == [r["cell"] for r in ranked[:3]]
    assert worst == [r["cell"] for r in reversed(ranked[-3:])]  # worst first
    best_scores = sweep_page.texts_of("div", "best")
    assert f"PSNR {float(ranked[0]['psnr']):.2f} dB" in " ".join(best_scores)
    assert len(sweep_page.images("best")) == 3 and len(sweep_page.images("worst")) == 3


def test_sweep_report_with_missing_values_and_no_summary(sweep_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "sweep"
    shutil.copytree(sweep_dir, copy)
    (copy / "summary.csv").unlink()
    rows = _results(copy)
    rows[0]["psnr"] = "nan"
    rows[1]["psnr"] = ""
    rows[2]["label_accuracy"] = "None"
    rows[3]["run_dir"] = "cells/does-not-exist"
    _write_csv(copy / "results.csv", rows)
    page = _parse(write_sweep_report(copy))
    _assert_self_contained(page)
    assert "computed from results.csv" in page.section_text("summary")
    assert "n/a" in page.section_text("results")
    ranked = [
        r["cell"]
        for r in sorted(rows[2:], key=lambda r: float(r["psnr"]), reverse=True)  # finite only
    ]
    assert page.texts_of("h4", "best") == ranked[:3]


def test_write_report_rejects_other_paths(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    afile = tmp_path / "file.txt"
    afile.write_text("x")
    for path, words in [
        (empty, "neither a run directory"),
        (tmp_path / "missing", "does not exist"),
        (afile, "is a file"),
    ]:
        with pytest.raises(GradleakError, match=words) as info:
            write_report(path)
        message = str(info.value)
        assert str(path) in message and "\n" not in message
    with pytest.raises(GradleakError, match="no metrics.json"):
        write_run_report(empty)
    with pytest.raises(GradleakError, match="no spec.yaml or results.csv"):
        write_sweep_report(empty)


def test_unreadable_metrics_json_is_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "metrics.json").write_text("{not json")
    with pytest.raises(GradleakError, match="not valid JSON"):
        write_report(tmp_path)


# ----------------------------------------------------------------------------- plots & format


def _is_png(data: bytes) -> bool:
    with Image.open(io.BytesIO(data)) as image:
        image.verify()
        return image.format == "PNG"


def test_plots_accept_csv_strings_empty_cells_and_numbers() -> None:
    csv_rows = [
        {"iteration": "1", "trial": "0", "loss": "4.0", "psnr": "", "mse": ""},
        {"iteration": "2", "trial": "0", "loss": "1.0", "psnr": "12.5", "mse": "0.05"},
        {"iteration": "3", "trial": "0", "loss": "0", "psnr": "13.0", "mse": "None"},
    ]
    numeric_rows = [{"iteration": i, "trial": 0, "loss": 1 / i, "psnr": None} for i in (1, 2)]
    sequential_trials = [
        {"iteration": i, "trial": t, "loss": 1.0 / (i + t)} for t in (0, 1) for i in (1, 2, 3)
    ]
    for data in (
        loss_curve_png(csv_rows),
        loss_curve_png(numeric_rows),
        loss_curve_png(sequential_trials),
        loss_curve_png([]),
        quality_curves_png(csv_rows),
        quality_curves_png(numeric_rows),
    ):
        assert _is_png(data)


def test_axis_plot_png() -> None:
    rows = [
        {"attack": a, "defense": d, "psnr": str(10 + i), "label_accuracy": ""}
        for i, (a, d) in enumerate((a, d) for a in ("dlg", "ig") for d in ("none", "noise"))
    ]
    rows.append({"attack": "dlg", "defense": "none", "psnr": "nan"})
    assert _is_png(axis_plot_png(rows, "defense"))
    assert _is_png(axis_plot_png(rows, "attack", values=["ig", "dlg"]))
    assert _is_png(axis_plot_png(rows, "defense", metric="label_accuracy"))  # all empty
    with pytest.raises(GradleakError, match="no column"):
        axis_plot_png(rows, "protocol")


@pytest.mark.parametrize(
    ("value", "spec", "text"),
    [
        (None, ".2f", "n/a"),
        ("", ".2f", "n/a"),
        ("None", "", "n/a"),
        (math.nan, ".2f", "n/a"),
        ("nan", ".2f", "n/a"),
        (12.3456, ".2f", "12.35"),
        ("12.3456", ".2f", "12.35"),
        (5.0, "d", "5"),
        (True, "", "yes"),
        ([3, 1], "", "3, 1"),
        ("dlg", ".2f", "dlg"),
        ("none", "", "none"),  # a defense's name, not a missing value
    ],
)
def test_fmt(value, spec, text) -> None:
    assert fmt(value, spec) == text


def test_report_is_reproducible(run_dir: Path) -> None:
    # The report reads only files: rendering twice gives the same page.
    first = write_run_report(run_dir).read_text()
    assert write_run_report(run_dir).read_text() == first
