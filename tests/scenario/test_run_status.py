"""A run records whether its reconstruction is an attack result: metrics.json's status."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import gradleak.scenario.run as run_module
from gradleak.scenario import RunConfig, run_attack

pytestmark = pytest.mark.usefixtures("one_thread")

# DLG with the reference's fixed step and an absurd step length: the first step lands far
# from anything useful and the run never gets back below its start.
# The normal start: the test checks that the scored images are exactly that start.
DIVERGING = {"line_search": "none", "lr": 1e6, "iterations": 20, "init": "randn"}


def _metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def test_a_diverged_run_says_so_in_metrics_json(tmp_path: Path) -> None:
    run = run_attack(RunConfig(out=tmp_path / "run", attack_options=DIVERGING, progress=False))

    metrics = _metrics(run.out_dir)
    assert metrics["status"] == "diverged"
    assert "its start at iteration 1" in metrics["status_reason"]
    assert metrics["trial_status"] == ["diverged"]
    # What was scored is the random start the attack drew, not an attack result.
    generator = torch.Generator().manual_seed(0)
    start = torch.randn(1, 1, 3, 32, 32, generator=generator)
    assert torch.equal(run.reconstruction.images, start[0])


def test_a_normal_run_is_ok(tmp_path: Path) -> None:
    config = RunConfig(out=tmp_path / "run", attack_options={"iterations": 3}, progress=False)
    metrics = _metrics(run_attack(config).out_dir)
    assert (metrics["status"], metrics["status_reason"]) == ("ok", "")
    assert metrics["trial_status"] == ["ok"]
    assert metrics["matching_loss"] == metrics["trial_losses"][metrics["best_trial"]]


def test_an_interrupted_run_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_observer = run_module.psnr_observer

    def interrupting_observer(case, stop_at=None, **kwargs):  # type: ignore[no-untyped-def]
        observe = real_observer(case, stop_at, **kwargs)

        def wrapped(iteration, losses, images):  # type: ignore[no-untyped-def]
            if iteration == 3:
                raise KeyboardInterrupt
            return observe(iteration, losses, images)

        return wrapped

    monkeypatch.setattr(run_module, "psnr_observer", interrupting_observer)
    config = RunConfig(out=tmp_path / "run", attack_options={"iterations": 20}, progress=False)
    metrics = _metrics(run_attack(config).out_dir)
    assert metrics["interrupted"] is True
    assert metrics["status"] == "interrupted"
    assert metrics["status_reason"] == "stopped by an interrupt after 3 iterations"
