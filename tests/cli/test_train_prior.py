"""`gradleak train-prior`: a run saves a loadable prior, bad input is one line with exit
code 2, an existing --out needs --overwrite, Ctrl-C keeps the last epoch with 130."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gradleak.attacks.priors.generative import load_generative_prior
from gradleak.training.generative import samples_path

from .running import cli_exit, one_line_error

pytestmark = pytest.mark.usefixtures("one_thread")


def _args(folder: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train-prior",
        "--dataset",
        "folder",
        "--data-root",
        str(folder),
        "--image-size",
        "8",
        "--epochs",
        "2",
        "--batch-size",
        "4",
        "--latent-dim",
        "4",
        "--out",
        str(out),
        "--no-progress",
        "--threads",
        "1",
        *extra,
    ]


@pytest.mark.parametrize("kind", ["vae", "dcgan"])
def test_train_prior_saves_a_loadable_prior(
    image_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    out = tmp_path / "priors" / "p.pt"
    assert cli_exit(_args(image_folder, out, "--kind", kind, "--range", "1-6")) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"saved {out} ({kind}, 6 images of 3×8×8, folder ")
    assert "2 epochs, final loss" in lines[0] and str(samples_path(out)) in lines[0]
    prior = load_generative_prior(out)
    assert (prior.kind, prior.epochs, prior.latent_dim) == (kind, 2, 4)
    assert prior.dataset.endswith(" 1-6, flipped") and len(prior.training_images) == 6
    assert samples_path(out).is_file()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--image-size", "10"), "not a multiple of 4"),
        (("--kind", "flow"), "invalid choice: 'flow'"),
        (("--range", "9-2"), "ends before it starts"),
        (("--range", "0-50"), "goes past the folder, which has 8 images"),
        (("--epochs", "0"), "epochs must be an integer of at least 1"),
        (("--lr", "0"), "lr must be a positive number"),
        (("--threads", "0"), "--threads must be at least 1"),
        (("--split", "train"), "image folders have no splits"),
    ],
)
def test_bad_input_is_one_line_with_exit_code_2(
    image_folder: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: tuple[str, ...],
    message: str,
) -> None:
    out = tmp_path / "p.pt"
    assert cli_exit(_args(image_folder, out, *extra)) == 2
    assert message in one_line_error(capsys)
    assert not out.exists()


def test_a_missing_data_root_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["train-prior", "--dataset", "cifar10", "--data-root", str(tmp_path / "none")]
    assert cli_exit([*args, "--out", str(tmp_path / "p.pt")]) == 2
    assert str(tmp_path / "none") in one_line_error(capsys)


def test_an_existing_out_needs_overwrite(
    image_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "p.pt"
    out.write_bytes(b"earlier")
    assert cli_exit(_args(image_folder, out)) == 2
    assert "--overwrite" in one_line_error(capsys)
    assert out.read_bytes() == b"earlier"
    assert cli_exit(_args(image_folder, out, "--overwrite")) == 0
    assert load_generative_prior(out).epochs == 2


def test_ctrl_c_keeps_the_last_epoch_and_exits_130(
    image_folder: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = torch.optim.Adam.step
    count = {"n": 0}

    def step_or_interrupt(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        count["n"] += 1
        if count["n"] == 3:  # the first step of epoch 2 (two steps per epoch)
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", step_or_interrupt)
    out = tmp_path / "p.pt"
    assert cli_exit(_args(image_folder, out)) == 130
    captured = capsys.readouterr()
    assert captured.err.strip() == f"interrupted: epoch 1 saved to {out}"
    assert ": 1 epoch, final loss" in captured.out
    assert load_generative_prior(out).epochs == 1


def test_the_command_is_listed(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_exit(["--help"]) == 0
    assert "train-prior" in capsys.readouterr().out


@pytest.mark.slow  # a fresh process imports torch: about 5 s, more on a busy machine
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_keeps_the_last_epoch_of_a_real_process(
    image_folder: Path, tmp_path: Path, signum: int, code: int
) -> None:
    out = tmp_path / "p.pt"
    argv = [sys.executable, "-m", "gradleak.cli", *_args(image_folder, out)]
    argv[argv.index("--epochs") + 1] = "100000"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while not out.is_file():  # saved as soon as epoch 1 ends
        assert child.poll() is None, child.communicate()
        assert time.monotonic() < deadline, "no epoch saved after 120 s"
        time.sleep(0.02)
    child.send_signal(signum)
    stdout, stderr = child.communicate(timeout=120)
    assert child.returncode == code, stderr
    assert "Traceback" not in stderr
    prior = load_generative_prior(out)
    assert 1 <= prior.epochs < 100000
    assert stderr.strip().splitlines()[-1] == f"interrupted: epoch {prior.epochs} saved to {out}"
    assert torch.load(out, weights_only=True)["interrupted"] is True
    assert f": {prior.epochs} epoch" in stdout
    assert not [p for p in tmp_path.iterdir() if ".partial" in p.name]
