"""The trade-off table: attack quality against each defense setting, beside its accuracy."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

import gradleak.studies.tradeoff as tradeoff_module
from gradleak.core.errors import GradleakError
from gradleak.studies.tradeoff import read_tradeoff, run_tradeoff, tradeoff_rows
from gradleak.training.utility import UtilityConfig, train_with_defenses

pytestmark = pytest.mark.usefixtures("one_thread")

MNIST = Path(__file__).resolve().parents[3] / "shared" / "data"
TINY = {"dataset": "cifar10", "train_count": 6, "test_count": 2, "epochs": 1, "batch_size": 2}


SPEC = """\
name: tiny-tradeoff
attacks: [idlg]
defenses: [none, "prune:0.5"]
images: [0, 1]
options: {idlg: {iterations: 2}}
utility: {dataset: cifar10, train_count: 6, test_count: 2, epochs: 1, batch_size: 2}
recovered_psnr: 9
"""


def test_tradeoff_table_has_attack_quality_beside_utility(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC)
    spec = read_tradeoff(path)
    out = tmp_path / "out"
    rows, interrupted = run_tradeoff(spec, out, progress=False, threads=1)
    assert not interrupted
    assert [(r["attack"], r["defense"]) for r in rows] == [("idlg", "none"), ("idlg", "prune:0.5")]
    with (out / "results.csv").open() as f:
        cells = list(csv.DictReader(f))
    for row in rows:
        psnr = sorted(float(c["psnr"]) for c in cells if c["defense"] == row["defense"])
        assert row["psnr_median"] == pytest.approx(sum(psnr) / 2)
        assert row["recovered"] == sum(p >= 9 for p in psnr) / 2
        expected = train_with_defenses(
            UtilityConfig(**TINY, defenses=() if row["defense"] == "none" else ("prune:0.5",))
        )
        assert row["test_accuracy"] == expected.accuracy
    assert (out / "tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| idlg | prune:0.5 | 2 |" in (out / "tradeoff.md").read_text()

    def no_training(config):  # type: ignore[no-untyped-def]
        raise AssertionError("a cached utility result was trained again")

    monkeypatch.setattr(tradeoff_module, "train_with_defenses", no_training)
    again, _ = run_tradeoff(spec, out, progress=False, threads=1)
    assert again == rows

    # A damaged cache file (a crash while writing it) is trained again, not a crash.
    (out / "utility" / "none.json").write_text('{"settings": {"mod')
    monkeypatch.setattr(tradeoff_module, "train_with_defenses", train_with_defenses)
    repaired, _ = run_tradeoff(spec, out, progress=False, threads=1)
    assert repaired == rows


def test_tradeoff_rows_by_hand_defense_by_defense_in_the_order_trained() -> None:
    cells = [
        {"attack": "idlg", "defense": "prune:0.5", "psnr": 30.0, "label_accuracy": 1.0},
        {"attack": "dlg", "defense": "none", "psnr": 10.0, "label_accuracy": None},
        {"attack": "idlg", "defense": "none", "psnr": 26.0, "label_accuracy": 0.5},
        {"attack": "dlg", "defense": "none", "psnr": 30.0, "label_accuracy": 1.0},
        {"attack": "idlg", "defense": "none", "psnr": None, "label_accuracy": 1.0},
        {"attack": "dlg", "defense": "noise:0.1", "psnr": 5.0, "label_accuracy": 0.0},
    ]
    utility = {
        (): {"accuracy": 0.9, "epsilon": None},
        ("prune:0.5",): {"accuracy": 0.8, "epsilon": 2.0},
    }
    rows = tradeoff_rows(cells, utility, 25.0)
    assert rows == [
        {"attack": "dlg", "defense": "none", "images": 2, "not_scored": 0, "psnr_median": 20.0,
         "psnr_mean": 20.0, "recovered": 0.5, "label_accuracy": 1.0, "test_accuracy": 0.9,
         "epsilon": None},
        {"attack": "idlg", "defense": "none", "images": 2, "not_scored": 0, "psnr_median": 26.0,
         "psnr_mean": 26.0, "recovered": 0.5, "label_accuracy": 0.75, "test_accuracy": 0.9,
         "epsilon": None},
        {"attack": "idlg", "defense": "prune:0.5", "images": 1, "not_scored": 0,
         "psnr_median": 30.0, "psnr_mean": 30.0, "recovered": 1.0, "label_accuracy": 1.0,
         "test_accuracy": 0.8, "epsilon": 2.0},
    ]  # fmt: skip


def test_cells_that_are_not_attack_results_are_counted_not_scored() -> None:
    # A diverged run's PSNR scores its random start; a failed one has none.
    cells = [
        {"attack": "dlg", "defense": "none", "psnr": 40.0, "label_accuracy": 1.0},
        {"attack": "dlg", "defense": "none", "psnr": 90.0, "status": "diverged"},
        {"attack": "dlg", "defense": "none", "psnr": None, "status": "failed"},
    ]
    [row] = tradeoff_rows(cells, {(): {"accuracy": 0.9, "epsilon": None}}, 25.0)
    assert row["images"] == 3 and row["not_scored"] == 2
    assert row["psnr_median"] == 40.0 and row["psnr_mean"] == 40.0
    assert row["recovered"] == 0.5  # of the two that ran, the diverged one is not recovered


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ("", "needs 'utility'"),
        ("utility: {colour: red}\n", "unknown key 'colour'"),
        ("utility: {epochs: 0}\n", "epochs must be at least 1"),
        ("utility: {defenses: [prune:0.1]}\n", "takes its defenses from the 'defenses' axis"),
        (
            "utility: {dataset: cifar10, train_count: 6, test_count: 2, batch_size: 2}\n"
            "recovered_psnr: -1\n",
            "'recovered_psnr' must be a positive",
        ),
        ("utility: {dataset: nosuch}\n", "utility dataset 'nosuch' is not one of"),
        ("utility: {model: vgg, dataset: cifar10}\n", "unknown model 'vgg'"),
        ("utility: {dataset: mnist}\n", "--data-root"),
        ("utility: {dataset: cifar10, batch_size: 64, train_count: 6}\n", "larger than"),
    ],
)
def test_bad_tradeoff_specs(tmp_path: Path, extra: str, fragment: str) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text("attacks: [idlg]\n" + extra)
    with pytest.raises(GradleakError, match=fragment.replace("(", r"\(")):
        read_tradeoff(path)
