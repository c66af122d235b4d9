"""The attack comparison: cells and their settings, outputs checked against the runs' own
files, reuse of finished runs, Ctrl-C, and bad input."""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from gradleak.cli import app as cli
from gradleak.cli.compare import parse_iterations
from gradleak.core.errors import GradleakError
from gradleak.scenario import build_case
from gradleak.studies import compare as compare_module
from gradleak.studies.compare import (
    DEFAULT_RUNS,
    AttackRun,
    Cell,
    CompareSpec,
    DatasetSource,
    grid_rows,
    load_snapshots,
    parse_attack_run,
    parse_dataset,
    run_compare,
    snapshot_at,
    summarise,
)

pytestmark = pytest.mark.usefixtures("one_thread")

BUNDLED = DatasetSource("cifar10")  # the CIFAR-10 test images shipped with the package


def _spec(**changes: object) -> CompareSpec:
    values: dict[str, object] = {
        "datasets": (BUNDLED,),
        "indices": (0,),
        "snapshots": (1, 2, 50),
        "attack_options": {"iterations": 3},
    }
    values.update(changes)
    return CompareSpec(**values)  # type: ignore[arg-type]


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


# --- Parsing and per-cell settings ----------------------------------------------------------


def test_attack_runs_default_to_the_protocol_they_read() -> None:
    assert parse_attack_run("dlg") == AttackRun("dlg", "fedsgd")
    assert parse_attack_run("idlg-admm") == AttackRun("idlg-admm", "fedadmm")
    assert parse_attack_run("dlg:fedavg") == AttackRun("dlg", "fedavg")
    assert [r.name for r in DEFAULT_RUNS] == [
        "dlg-fedsgd",
        "idlg-fedsgd",
        "dlg-admm-fedadmm",
        "idlg-admm-fedadmm",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [("nope", "unknown attack 'nope'"), ("dlg:fedprox", "protocol 'fedprox' in 'dlg:fedprox'")],
)
def test_bad_attack_runs_are_one_line_errors(text: str, message: str) -> None:
    with pytest.raises(GradleakError, match=message):
        parse_attack_run(text)


def test_datasets_are_named_by_kind_or_by_their_image_folder(tmp_path: Path) -> None:
    assert parse_dataset("mnist=/data/mnist") == DatasetSource("mnist", Path("/data/mnist"))
    assert parse_dataset("cifar10") == DatasetSource("cifar10", None)
    lfw = parse_dataset(f"folder={tmp_path / 'lfw'}")
    assert lfw.label == "lfw" and lfw.dataset == "folder"
    with pytest.raises(GradleakError, match="dataset 'faces' in 'faces=/x' is not one of"):
        parse_dataset("faces=/x")
    with pytest.raises(GradleakError, match="an image folder needs its path"):
        parse_dataset("folder")


def test_local_training_settings_reach_only_protocols_that_train_locally() -> None:
    spec = _spec(settings={"local_lr": 0.05, "rounds": 2, "seed": 3, "image_size": 16})
    fedsgd = spec.config(Cell(BUNDLED, 0, AttackRun("dlg", "fedsgd")))
    fedadmm = spec.config(Cell(BUNDLED, 0, AttackRun("dlg-admm", "fedadmm")))
    assert (fedsgd.local_lr, fedsgd.rounds, fedsgd.seed) == (None, 1, 3)
    assert (fedadmm.local_lr, fedadmm.rounds, fedadmm.seed) == (0.05, 2, 3)
    assert fedsgd.image_size is None  # only image folders are resized
    folder = DatasetSource("folder", Path("/faces"))
    assert spec.config(Cell(folder, 0, AttackRun("dlg", "fedsgd"))).image_size == 16
    # Every iteration is logged so the snapshots fall on the requested iterations.
    assert fedsgd.attack_options == {"log_every": 1, "iterations": 3}
    assert fedsgd.snapshots == (1, 2, 50) and fedsgd.indices == (0,)
    # A closed form logs nothing per iteration: it is not given log_every, which it refuses.
    closed = _spec(attack_options={}).config(Cell(BUNDLED, 0, AttackRun("spear", "fedsgd")))
    assert closed.attack_options == {}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"runs": (AttackRun("dlg-admm", "fedsgd"),)}, "write dlg-admm:fedadmm"),
        ({"runs": (AttackRun("dlg", "fedadmm"),)}, "use dlg-admm with fedadmm"),
        ({"runs": DEFAULT_RUNS[:1] * 2}, "attack run dlg-fedsgd is given more than once"),
        ({"datasets": ()}, "give at least one --dataset"),
        ({"indices": (0, 0)}, "image index 0 is given more than once"),
        ({"indices": (8,)}, "image index 8 is out of range"),
        ({"settings": {"attack": "ig"}}, "setting 'attack' is chosen per run"),
        ({"settings": {"colour": 1}}, "unknown key 'colour' in comparison settings"),
        ({"settings": {"admm_rho": 0.0}}, "ADMM penalty rho must be positive"),
        ({"attack_options": {"iterations": -1}}, "iterations"),
        ({"datasets": (DatasetSource("mnist", Path("/missing")),)}, "/missing"),
    ],
)
def test_impossible_comparisons_fail_before_any_run(
    changes: dict[str, object], message: str, tmp_path: Path
) -> None:
    with pytest.raises(GradleakError, match=message):
        run_compare(_spec(**changes), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_snapshot_stands_for_the_first_recorded_iteration_at_or_after_the_request() -> None:
    recorded = {1: torch.zeros(1), 10: torch.zeros(1), 36: torch.zeros(1)}
    assert snapshot_at(recorded, 0) == (1, False)
    assert snapshot_at(recorded, 10) == (10, False)
    assert snapshot_at(recorded, 11) == (36, False)
    assert snapshot_at(recorded, 300) == (36, True)  # the run ended at 36
    assert snapshot_at({}, 1) is None


def test_summary_means_by_hand() -> None:
    rows = [
        {"dataset": "d", "attack": "a", "protocol": "p", "psnr": 10.0, "ssim": 0.2, "mse": 0.1,
         "label_accuracy": 1.0, "iterations": 4, "seconds": 1.0},
        {"dataset": "d", "attack": "a", "protocol": "p", "psnr": 20.0, "ssim": 0.4, "mse": 0.3,
         "label_accuracy": 0.0, "iterations": 8, "seconds": 3.0},
        {"dataset": "d", "attack": "b", "protocol": "p", "psnr": 7.0, "ssim": None, "mse": 0.5,
         "label_accuracy": None, "iterations": 2, "seconds": 2.0},
    ]  # fmt: skip
    first, second = summarise(rows)
    assert first["images"] == 2
    assert first["psnr_mean"] == pytest.approx(15.0) and first["psnr_std"] == pytest.approx(5.0)
    assert first["ssim_mean"] == pytest.approx(0.3) and first["mse_mean"] == pytest.approx(0.2)
    assert first["label_accuracy_mean"] == 0.5 and first["iterations_mean"] == 6.0
    assert (second["attack"], second["ssim_mean"], second["label_accuracy_mean"]) == (
        "b",
        None,
        None,
    )


# --- End to end on the bundled images -------------------------------------------------------


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> Path:
    out = tmp_path_factory.mktemp("compare")
    result = run_compare(_spec(), out, progress=False)
    assert (result.ran, result.skipped, result.interrupted) == (4, 0, False)
    return out


def test_tables_repeat_each_runs_metrics(compared: Path) -> None:
    rows = _csv(compared / "results.csv")
    assert [(r["attack"], r["protocol"]) for r in rows] == [
        (r.attack, r.protocol) for r in DEFAULT_RUNS
    ]
    for row in rows:
        metrics = json.loads((compared / row["run_dir"] / "metrics.json").read_text())
        assert metrics["attack"] == row["attack"] and metrics["protocol"] == row["protocol"]
        assert float(row["psnr"]) == pytest.approx(metrics["psnr"])
        assert int(row["iterations"]) == metrics["iterations"] <= 3
    summary = _csv(compared / "summary.csv")
    assert [float(s["psnr_mean"]) for s in summary] == pytest.approx(
        [float(r["psnr"]) for r in rows]
    )
    markdown = (compared / "summary.md").read_text()
    assert "| cifar10 | idlg-admm | fedadmm | 1 |" in markdown


def test_snapshots_hold_the_truth_and_the_scored_reconstruction(compared: Path) -> None:
    config = _spec().config(Cell(BUNDLED, 0, DEFAULT_RUNS[2]))
    case = build_case(config.validate())
    run_dir = compared / Cell(BUNDLED, 0, DEFAULT_RUNS[2]).path
    snapshots, truth = load_snapshots(run_dir / "snapshots.pt")
    torch.testing.assert_close(truth, case.server.decode(case.client.batch.images))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    last = metrics["iterations"]
    assert sorted(snapshots) == sorted({i for i in (1, 2) if i <= last} | {last})
    final = snapshots[max(snapshots)]
    mse = float(((final - truth) ** 2).mean())
    assert 10 * math.log10(1 / mse) == pytest.approx(metrics["psnr"], rel=1e-4)


def test_grid_rows_show_each_attack_at_the_requested_iterations(compared: Path) -> None:
    rows = grid_rows(_spec(), compared, 0)
    assert [row.label.splitlines()[1] for row in rows] == [r.label for r in DEFAULT_RUNS]
    for row, run in zip(rows, DEFAULT_RUNS, strict=True):
        run_dir = compared / Cell(BUNDLED, 0, run).path
        snapshots, truth = load_snapshots(run_dir / "snapshots.pt")
        last = json.loads((run_dir / "metrics.json").read_text())["iterations"]
        first, second, late, shown_truth = row.tiles
        assert torch.equal(first.pixels, snapshots[1]) and first.caption == ""
        assert torch.equal(late.pixels, snapshots[last])  # asked for 50, the run ended first
        assert late.caption == f"ended at {last}"
        assert torch.equal(shown_truth.pixels, truth)
        assert f"{json.loads((run_dir / 'metrics.json').read_text())['psnr']:.1f} dB" in row.label
    image = Image.open(compared / "grid-image0.png")
    assert image.format == "PNG" and image.height > 0
    assert Image.open(compared / "curves-cifar10.png").format == "PNG"
    assert grid_rows(_spec(), compared, 5) == []  # no finished run on image 5


def test_finished_runs_are_reused_and_changed_settings_run_again(compared: Path) -> None:
    again = run_compare(_spec(), compared, progress=False)
    assert (again.ran, again.skipped) == (0, 4)
    changed = _spec(runs=DEFAULT_RUNS[:1], attack_options={"iterations": 2})
    rerun = run_compare(changed, compared, progress=False)
    assert (rerun.ran, rerun.skipped) == (1, 0)
    assert json.loads((compared / Cell(BUNDLED, 0, DEFAULT_RUNS[0]).path / "metrics.json")
                      .read_text())["iterations"] <= 2  # fmt: skip


def test_ctrl_c_keeps_finished_runs_and_draws_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = compare_module.run_attack
    calls = []

    def interrupted_third(config):  # noqa: ANN001, ANN202
        calls.append(config.attack)
        if len(calls) == 3:
            config.out.mkdir(parents=True)  # what a run leaves when it is cut short
            raise KeyboardInterrupt
        return real(config)

    monkeypatch.setattr(compare_module, "run_attack", interrupted_third)
    spec = _spec(attack_options={"iterations": 1}, snapshots=(1,))
    result = run_compare(spec, tmp_path, progress=False)
    assert result.interrupted and (result.ran, len(result.rows)) == (2, 2)
    assert [r["attack"] for r in _csv(tmp_path / "results.csv")] == ["dlg", "idlg"]
    assert (tmp_path / "grid-image0.png").is_file()
    partial = list((tmp_path / "runs").glob("*/*/*.partial"))
    assert [p.name for p in partial] == ["dlg-admm-fedadmm.partial"]

    monkeypatch.setattr(compare_module, "run_attack", real)
    finish = run_compare(spec, tmp_path, progress=False)
    assert (finish.removed_partial, finish.ran, finish.skipped) == (1, 2, 2)
    assert not list((tmp_path / "runs").glob("*/*/*.partial"))


# --- The command line -----------------------------------------------------------------------


def _main(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    """`gradleak compare ARGV` through gradleak.cli.main."""
    try:
        return cli.main(["compare", *argv])
    except SystemExit as exc:  # argparse's own errors (bad flag values)
        return int(exc.code or 0)


def test_command_runs_the_comparison_and_prints_the_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = ["--dataset", "cifar10", "--runs", "idlg", "idlg-admm", "--iterations", "1"]
    argv += ["--snapshots", "1", "--local-lr", "0.02", "--out", str(tmp_path), "--no-progress"]
    assert _main(argv, monkeypatch) == 0
    out = capsys.readouterr().out
    assert "cifar10 image 0, idlg-admm (fedadmm): PSNR" in out
    assert "| cifar10 | idlg | fedsgd | 1 |" in out
    assert f"figure: {tmp_path / 'grid-image0.png'}" in out
    run = tmp_path / "runs" / "cifar10" / "image-0" / "idlg-admm-fedadmm"
    settings = json.loads((run / "metrics.json").read_text())["protocol_settings"]
    assert settings["local_training"]["lr"] == 0.02


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--runs", "dlg-admm:fedsgd"], "write dlg-admm:fedadmm"),
        (["--threads", "0"], "--threads must be at least 1"),
        (["--index", "9"], "image index 9 is out of range"),
        (["--snapshots", "1,x"], "'1,x' is not a comma-separated list of iterations"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(
    argv: list[str],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code = _main(["--dataset", "cifar10", "--out", str(tmp_path / "out"), *argv], monkeypatch)
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_ctrl_c_exits_130_after_writing_what_finished(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(config):  # noqa: ANN001, ANN202
        raise KeyboardInterrupt

    monkeypatch.setattr(compare_module, "run_attack", interrupted)
    code = _main(["--dataset", "cifar10", "--out", str(tmp_path), "--no-progress"], monkeypatch)
    assert code == 130
    assert "interrupted: 0 of 4 runs finished" in capsys.readouterr().err
    assert _csv(tmp_path / "results.csv") == []


def test_snapshot_flag_parses_sorted_unique_iterations() -> None:
    assert parse_iterations("30, 1,10,10") == (1, 10, 30)
    for bad in ("1,x", "-1", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_iterations(bad)
