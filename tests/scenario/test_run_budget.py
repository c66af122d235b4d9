"""A run's time check without attacking, as studies make it for their cells up front."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import gradleak.attacks.gradient_matching as gradient_matching
from gradleak.attacks.engine.budget import BudgetEstimate
from gradleak.core.errors import GradleakError
from gradleak.scenario import RunConfig
from gradleak.scenario.budget import check_run_budget

pytestmark = pytest.mark.usefixtures("one_thread")


def _ten_ms_a_trial(problem: Any, images: torch.Tensor, inputs: Any) -> float:
    """A stacked evaluation's time, 10 ms per trial: stacking saves nothing here."""
    return 0.01 * images.shape[0]


def test_run_budget_refuses_too_many_lbfgs_restarts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gradient_matching, "measure_evaluation_seconds", _ten_ms_a_trial)
    config = RunConfig(out=tmp_path / "run", attack_options={"restarts": 50}, progress=False)
    with pytest.raises(GradleakError, match="--restarts 48 or fewer"):
        check_run_budget(config)
    assert not (tmp_path / "run").exists()  # nothing attacked, nothing written


def test_run_budget_of_the_default_run_and_of_an_adam_attack(tmp_path: Path) -> None:
    notices: list[str] = []
    estimate = check_run_budget(
        RunConfig(out=tmp_path / "a", progress=False), notice=notices.append
    )
    assert isinstance(estimate, BudgetEstimate)
    assert (estimate.trials, estimate.steps, estimate.evaluations_per_step) == (1, 300, 25)
    assert estimate.seconds_per_evaluation > 0
    config = RunConfig(attack="ig", labels_known=True, out=tmp_path / "b", progress=False)
    assert check_run_budget(config) is None
