"""`--device cpu` given explicitly: the same numbers as the default, and the device recorded.

On this machine `auto` (the default) is the CPU unless an accelerator is present; where one
is, the comparison with the default is left out (GPU numbers differ in rounding).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml

from gradleak.core.device import resolve_device

from .running import cli_exit

pytestmark = pytest.mark.usefixtures("one_thread")

AUTO_IS_CPU = resolve_device("auto") == torch.device("cpu")
same_as_default = pytest.mark.skipif(not AUTO_IS_CPU, reason="auto is an accelerator here")


def _attack(out: Path, *device: str) -> dict[str, object]:
    argv = ["attack", "--attack", "ig", "--iterations", "3", "--batch-size", "2"]
    assert cli_exit([*argv, "--no-progress", "--out", str(out), *device]) == 0
    return json.loads((out / "metrics.json").read_text())


@same_as_default
def test_attack_on_the_cpu_is_the_default_run_and_says_so(tmp_path: Path) -> None:
    explicit = _attack(tmp_path / "cpu", "--device", "cpu")
    default = _attack(tmp_path / "auto")
    assert explicit["device"] == default["device"] == "cpu"
    assert explicit["device_name"] == "cpu"
    for key in ("psnr", "ssim", "mse", "matching_loss", "trial_losses", "recovered_labels"):
        assert explicit[key] == default[key], key
    for run in ("cpu", "auto"):
        config = yaml.safe_load((tmp_path / run / "config.yaml").read_text())
        assert config["device"] == "cpu"  # the device used, resolved
        assert config["run"]["device"] == run  # the setting as asked for, to run it again


def test_the_device_does_not_name_the_run_directory() -> None:
    from gradleak.scenario import RunConfig

    assert RunConfig(device="cpu").default_out() == RunConfig().default_out()


SPEC = """\
name: devices
attacks: [idlg]
images: [0, 1]
options: {idlg: {iterations: 2}}
"""


def _results(folder: Path) -> list[dict[str, str]]:
    with (folder / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


@same_as_default
def test_a_sweep_cell_is_the_same_on_any_device(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    common = ["sweep", str(spec), "--no-progress", "--threads", "1"]
    assert cli_exit([*common, "--out", str(tmp_path / "cpu"), "--device", "cpu"]) == 0
    assert cli_exit([*common, "--out", str(tmp_path / "auto")]) == 0
    assert _results(tmp_path / "cpu") == _results(tmp_path / "auto")
    capsys.readouterr()
    # The device is not part of a cell: the finished cells are kept whatever it says now.
    assert cli_exit([*common, "--out", str(tmp_path / "cpu"), "--device", "auto"]) == 0
    assert "2 cells: 0 run now, 2 already done" in capsys.readouterr().out
    metrics = json.loads(next((tmp_path / "cpu" / "cells").glob("*/metrics.json")).read_text())
    assert metrics["device"] == "cpu"


@same_as_default
def test_compare_on_the_cpu_is_the_default(tmp_path: Path) -> None:
    common = ["compare", "--dataset", "cifar10", "--runs", "idlg:fedsgd", "--iterations", "2"]
    common += ["--snapshots", "1", "--no-progress"]
    assert cli_exit([*common, "--out", str(tmp_path / "cpu"), "--device", "cpu"]) == 0
    assert cli_exit([*common, "--out", str(tmp_path / "auto")]) == 0
    assert _results(tmp_path / "cpu") == _results(tmp_path / "auto")


@same_as_default
def test_train_on_the_cpu_is_the_default(tmp_path: Path, shared_data: Path) -> None:
    common = ["train", "--model", "lenet", "--dataset", "cifar10", "--data-root", str(shared_data)]
    common += ["--train-range", "0-15", "--batch-size", "8", "--no-progress"]
    assert cli_exit([*common, "--out", str(tmp_path / "cpu.pt"), "--device", "cpu"]) == 0
    assert cli_exit([*common, "--out", str(tmp_path / "auto.pt")]) == 0
    states = [
        torch.load(tmp_path / name, weights_only=True)["state_dict"]
        for name in ("cpu.pt", "auto.pt")
    ]
    assert states[0].keys() == states[1].keys()
    for name, tensor in states[0].items():
        assert torch.equal(tensor, states[1][name]), name
    history = json.loads((tmp_path / "cpu.json").read_text())
    assert history["device"] == "cpu"
