"""run_attack end to end: the files it writes, what they hold, and repeatability."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from gradleak.core.errors import GradleakError
from gradleak.metrics import mse, psnr, ssim
from gradleak.scenario import RunConfig, RunResult, load_run_config, run_attack
from gradleak.scenario.observe import psnr_observer

pytestmark = pytest.mark.usefixtures("one_thread")

TILE = 128  # 32-pixel images are enlarged 4× in the pictures
GAP = 2


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> RunResult:
    out = tmp_path_factory.mktemp("outputs") / "run"
    config = RunConfig(out=out, attack_options={"iterations": 20}, progress=False)
    return run_attack(config)


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0


def _hwc(images01: torch.Tensor) -> np.ndarray:
    return images01[0].permute(1, 2, 0).double().numpy()


def test_run_writes_all_outputs(run: RunResult) -> None:
    names = {"metrics.json", "reconstruction.png", "grid.png", "history.csv", "config.yaml"}
    assert names <= {p.name for p in run.out_dir.iterdir()}


def test_metrics_json(run: RunResult) -> None:
    metrics = json.loads((run.out_dir / "metrics.json").read_text())
    required = {"attack", "model", "psnr", "ssim", "mse", "label_accuracy", "iterations"}
    assert required | {"seconds"} <= set(metrics)
    assert (metrics["attack"], metrics["model"], metrics["dataset"]) == ("dlg", "lenet", "cifar10")

    rec, case = run.reconstruction, run.case
    recon01, truth01 = case.server.decode(rec.images), case.server.decode(case.client.batch.images)
    assert metrics["psnr"] == pytest.approx(float(psnr(recon01, truth01).mean()))
    assert metrics["mse"] == pytest.approx(float(mse(recon01, truth01).mean()))
    assert metrics["ssim"] == pytest.approx(float(ssim(recon01, truth01).mean()))
    assert metrics["psnr"] == pytest.approx(10 * math.log10(1 / metrics["mse"]))
    assert rec.labels is not None
    assert metrics["recovered_labels"] == rec.labels.tolist()
    assert metrics["true_labels"] == case.client.batch.labels.tolist() == [3]
    assert metrics["label_accuracy"] == float(rec.labels.tolist() == [3])
    assert metrics["iterations"] == rec.iterations
    assert 0 < metrics["iterations"] <= 20
    assert metrics["seconds"] == pytest.approx(rec.seconds) and metrics["seconds"] > 0
    assert metrics["matching_loss"] == pytest.approx(rec.loss)
    assert metrics["interrupted"] is False
    assert metrics["threat_model"]["labels_known"] is False
    assert metrics["label_strategy"] == "optimize"
    assert metrics["matching"] == [0]
    # 20 DLG steps on LeNet already beat random guessing by a wide margin.
    assert metrics["psnr"] > 15


def test_reconstruction_png_shows_the_reconstruction(run: RunResult) -> None:
    pixels = _png(run.out_dir / "reconstruction.png")
    assert pixels.shape == (TILE, TILE, 3)
    expected = _hwc(run.case.server.decode(run.reconstruction.images))
    np.testing.assert_allclose(pixels[::4, ::4], expected, atol=0.5 / 255 + 1e-6)


def test_grid_has_truth_above_reconstruction(run: RunResult) -> None:
    pixels = _png(run.out_dir / "grid.png")
    assert pixels.shape == (2 * TILE + GAP, TILE, 3)
    truth = _hwc(run.case.server.decode(run.case.client.batch.images))
    recon = _hwc(run.case.server.decode(run.reconstruction.images))
    np.testing.assert_allclose(pixels[:TILE:4, ::4], truth, atol=0.5 / 255 + 1e-6)
    np.testing.assert_allclose(pixels[TILE + GAP :: 4, ::4], recon, atol=0.5 / 255 + 1e-6)


def test_history_csv(run: RunResult) -> None:
    with (run.out_dir / "history.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows
    header = set(rows[0])
    assert {"iteration", "loss", "psnr"} <= header
    assert len(rows) == len(run.reconstruction.history)
    iterations = [int(r["iteration"]) for r in rows]
    assert iterations == sorted(iterations)
    assert iterations[-1] == run.reconstruction.iterations
    losses = [float(r["loss"]) for r in rows]
    assert losses[-1] == pytest.approx(run.reconstruction.loss)
    # The PSNR column is the evaluation side's view of the best iterate: it ends at the score.
    assert float(rows[-1]["psnr"]) == pytest.approx(run.metrics["psnr"], rel=1e-6)
    assert float(rows[-1]["psnr"]) > float(rows[0]["psnr"])


def test_config_yaml_records_the_resolved_settings(run: RunResult, tmp_path: Path) -> None:
    resolved = yaml.safe_load((run.out_dir / "config.yaml").read_text())
    attack = resolved["attack"]
    assert attack["name"] == "dlg"
    assert attack["iterations"] == 20
    assert (attack["objective"], attack["optimizer"], attack["lr"]) == ("l2", "lbfgs", 1.0)
    assert attack["label_strategy"] == "optimize"
    assert resolved["run"]["attack_options"] == {"iterations": 20}
    assert resolved["threat_model"]["batch_size"] == 1
    # The run section is a config file that reproduces the run's settings.
    again = tmp_path / "again.yaml"
    again.write_text(yaml.safe_dump(resolved["run"]))
    assert load_run_config(again, {}) == RunConfig(
        out=run.out_dir, attack_options={"iterations": 20}, progress=False
    )


def test_psnr_observer_scores_the_best_trial(run: RunResult) -> None:
    case = run.case
    observe = psnr_observer(case)
    truth = case.client.batch.images
    noisy = truth + 0.5 * torch.randn(truth.shape, generator=torch.Generator().manual_seed(0))
    trials = torch.stack([noisy, truth])  # K=2: the second trial is exact
    row = observe(0, torch.tensor([1.0, 0.0]), trials)
    assert row["psnr"] == pytest.approx(100.0)  # capped PSNR of an exact image
    row = observe(0, torch.tensor([0.0, 1.0]), trials)
    expected = float(psnr(case.server.decode(noisy), case.server.decode(truth)).mean())
    assert row["psnr"] == pytest.approx(expected)


def _small(out: Path, seed: int = 0) -> RunConfig:
    return RunConfig(out=out, seed=seed, attack_options={"iterations": 5}, progress=False)


def test_same_config_and_seed_give_identical_metrics(tmp_path: Path) -> None:
    first = run_attack(_small(tmp_path / "a")).metrics
    second = run_attack(_small(tmp_path / "b")).metrics
    for key in ("psnr", "ssim", "mse", "matching_loss", "trial_losses", "recovered_labels"):
        assert first[key] == second[key], key
    assert first["per_image"] == second["per_image"]
    # The seed matters: another seed starts elsewhere and ends with another loss.
    other = run_attack(_small(tmp_path / "c", seed=1)).metrics
    assert other["matching_loss"] != first["matching_loss"]


def test_default_out_dir_names_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = RunConfig(attack_options={"iterations": 1}, progress=False)
    result = run_attack(config)
    assert result.out_dir == config.default_out()
    assert result.out_dir.name.startswith("dlg-lenet-cifar10-0-b1-s0-")
    assert (tmp_path / result.out_dir / "metrics.json").is_file()


def test_a_bad_run_directory_is_reported_before_bad_attack_settings(tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.write_text("not a directory")
    config = RunConfig(attack_options={"iterations": -1}, out=taken, progress=False)
    with pytest.raises(GradleakError, match="is a file, not a directory"):
        run_attack(config)
