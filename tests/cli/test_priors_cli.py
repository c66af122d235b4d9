"""`gradleak attack --prior`, `--group-consistency` and `--init`: runs and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from gradleak.attacks.priors.generative import GenerativePrior, Generator, save_generative_prior

from .running import cli_exit, one_line_error

pytestmark = pytest.mark.usefixtures("one_thread")


def _prior(path: Path, channels: int = 3, size: int = 32) -> Path:
    torch.manual_seed(0)
    generator = Generator(8, channels, size, width=8)
    images = (torch.rand(6, channels, size, size) * 255).to(torch.uint8)
    prior = GenerativePrior("vae", generator, 8, (channels, size, size), "noise 0-5", images, 1)
    return save_generative_prior(prior, path)


def test_bn_client_and_group_consistency_run_and_are_recorded(tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = ["attack", "--attack", "ig", "--model", "resnet20", "--iterations", "2"]
    argv += ["--prior", "tv", "--prior", "bn-client:0.1", "--share-buffers"]
    argv += ["--group-consistency", "2:0.5", "--out", str(out), "--no-progress"]
    assert cli_exit(argv) == 0
    config = yaml.safe_load((out / "config.yaml").read_text())["attack"]
    assert config["priors"] == ["tv", "bn-client:0.1"]
    assert config["bn_statistics"] == "client batch statistics"
    assert (config["group_consistency"], config["group_weight"], config["restarts"]) == (2, 0.5, 2)


def test_a_generative_prior_run_shows_the_priors_nearest_training_images(tmp_path: Path) -> None:
    path = _prior(tmp_path / "prior.pt")
    out = tmp_path / "run"
    argv = ["attack", "--attack", "ig", "--model", "lenet", "--iterations", "2"]
    argv += ["--prior", f"gan:{path}", "--out", str(out), "--no-progress"]
    assert cli_exit(argv) == 0
    nearest = json.loads((out / "metrics.json").read_text())["prior_nearest"]
    assert nearest["file"] == str(path) and nearest["trained_on"] == "noise 0-5"
    assert len(nearest["indices"]) == 1 and 0 <= nearest["indices"][0] < 6
    assert (out / "prior_nearest.png").is_file()
    assert cli_exit(["report", str(out)]) == 0
    assert "nearest training image" in (out / "report.html").read_text()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--prior", "deep"], "unknown prior 'deep'"),
        (["--prior", "bn:-1"], "must be a number >= 0"),
        (["--prior", "gan"], "needs its file"),
        (["--group-consistency", "1"], "give the seeds K >= 2"),
        (["--group-consistency", "4:x"], "give the seeds K >= 2"),
        (["--group-consistency", "4", "--restarts", "2"], "needs restarts 4, got 2"),
        (["--prior", "bn"], "needs a model with batch norm, and this one has none"),
        (["--prior", "gan:missing.pt"], "missing.pt"),
        (["--init", "learned"], "learned needs the inverter's file"),
        (["--init", "sideways"], "init 'sideways' is not one of"),
        (["--init", "zeros:x.pt"], "init 'zeros:x.pt' is not one of"),
        (["--tv", "0.3", "--prior", "bn"], "add --prior tv:0.3 (or drop --tv)"),
        (["--prior", "gan:g.pt", "--init", "learned:i.pt"], "would be ignored"),
        (["--prior", "gias:g.pt"], "needs at least 2 iterations"),
    ],
)
def test_bad_prior_flags_are_one_line_and_exit_code_2(
    extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["attack", "--attack", "ig", "--model", "lenet", "--iterations", "1"]
    argv += ["--out", str(tmp_path / "run"), "--no-progress", *extra]
    assert cli_exit(argv) == 2
    assert message in one_line_error(capsys)
    assert not (tmp_path / "run").exists()


def test_a_prior_for_other_images_is_refused_naming_what_it_was_trained_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _prior(tmp_path / "mnist-prior.pt", channels=1, size=28)
    argv = ["attack", "--attack", "ig", "--model", "lenet", "--iterations", "2"]
    argv += ["--prior", f"gias:{path}", "--out", str(tmp_path / "run"), "--no-progress"]
    assert cli_exit(argv) == 2
    assert "1×28×28" in one_line_error(capsys)
