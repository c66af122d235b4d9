"""`gradleak attack --budget SECONDS`: bad budgets refused in one line before any work; an
Adam attack timed and given the iterations that fit, recorded in the run's outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from gradleak.attacks.engine.time_fit import StepTiming
from gradleak.scenario import time_budget

from .running import cli_exit, one_line_error

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("budget", ["0", "-5", "nan", "inf"])
def test_a_budget_that_is_not_a_positive_number_is_refused(
    budget: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    code = cli_exit(["attack", "--attack", "ig", "--budget", budget, "--out", str(out)])
    assert code == 2
    assert "--budget must be a positive number of seconds" in one_line_error(capsys)
    assert not out.exists()


def test_a_budget_too_small_for_one_step_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Timing says one iteration takes a minute: a 1 s budget fits none.
    monkeypatch.setattr(time_budget, "measure_steps", lambda run: StepTiming(60.0, 0.0, 0.0))
    out = tmp_path / "run"
    code = cli_exit(["attack", "--attack", "ig", "--budget", "1", "--out", str(out)])
    assert code == 2
    assert "--budget 1 s fits no iteration of ig" in one_line_error(capsys)
    assert not out.exists()


def test_the_budget_plans_the_iterations_that_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A measured 10 ms per iteration: 0.85 of the 3 s left fit 255 iterations, one restart
    # (far fewer than the preset's 24,000 × 8).
    monkeypatch.setattr(time_budget, "measure_steps", lambda run: StepTiming(0.01, 0.0, 0.0))
    out = tmp_path / "run"
    code = cli_exit(
        ["attack", "--attack", "ig", "--budget", "3", "--out", str(out), "--no-progress"]
    )
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["restarts"] == 1
    assert 0 < metrics["iterations"] <= 255
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["run"]["budget"] == 3.0
    assert 240 <= resolved["attack"]["iterations"] <= 255
    assert resolved["attack"]["restarts"] == 1


@pytest.mark.parametrize(("setting", "fitted"), [("auto", False), ("on", "on"), ("off", "off")])
def test_a_budget_keeps_an_auto_compile_eager_as_it_was_timed(
    setting: str, fitted: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gradleak import attacks
    from gradleak.fl import FedSGDClient
    from gradleak.scenario import RunConfig, build_case

    monkeypatch.setattr(time_budget, "measure_steps", lambda run: StepTiming(0.01, 0.0, 0.0))
    case = build_case(RunConfig(model="lenet", indices=(0,), labels_known=True))
    update = FedSGDClient(case.server.model).compute_update(case.client.batch)
    attack = attacks.get("ig").with_options({"compile": setting})
    fit = time_budget.fit_to_budget(attack, update, case.server, 2.0)
    # auto would decide on the longer run and spend a compile the plan never counted.
    assert fit.attack.config.compile == fitted
    assert fit.plan is not None and fit.plan.iterations > 0
