"""`compile: auto|on|off`: the decision (a pure function), the cache folder, the records of
earlier compiles, and a plan made without compiling anything."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from gradleak.attacks.engine import compiling
from gradleak.attacks.engine.adam import optimize_adam
from gradleak.attacks.engine.compiling import (
    MIN_EVALUATIONS,
    WARM_FRACTION,
    CompileCosts,
    CompileMode,
    CompileRecords,
    compile_cache_dir,
    compile_mode,
    decide_compile,
    plan_compile,
    use_compile_cache,
)
from gradleak.core.errors import GradleakError

from .problems import matching_problem

COLD = CompileCosts(compile_seconds=20.0, step_ratio=0.5, cached=False, measured=False)


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Compile records and inductor's cache go to the test's folder, not the user's."""
    monkeypatch.setenv("GRADLEAK_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "cache" / "compile" / "inductor"))


# --- the mode a setting names ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "mode"),
    [
        (True, CompileMode.ON),
        (False, CompileMode.OFF),
        ("auto", CompileMode.AUTO),
        (" ON ", CompileMode.ON),
        ("off", CompileMode.OFF),
        (CompileMode.AUTO, CompileMode.AUTO),
    ],
)
def test_a_setting_names_its_mode(value: Any, mode: CompileMode) -> None:
    assert compile_mode(value) is mode


@pytest.mark.parametrize("value", ["sometimes", 1, None, ""])
def test_anything_else_is_refused_naming_the_choices(value: Any) -> None:
    with pytest.raises(GradleakError, match="is not one of: on, off, auto"):
        compile_mode(value)


# --- the decision --------------------------------------------------------------------------------


def test_on_and_off_decide_without_timing() -> None:
    assert decide_compile(CompileMode.ON, evaluations=1).compile is True
    assert decide_compile(CompileMode.OFF, evaluations=10**6).compile is False


def test_auto_compiles_exactly_when_the_saving_exceeds_the_compile_time() -> None:
    # 1000 evaluations × 50 ms × (1 − 0.5) = 25 s saved against 20 s of compiling.
    decision = decide_compile(CompileMode.AUTO, evaluations=1000, eager_seconds=0.05, costs=COLD)
    assert decision.compile is True
    assert "≈25.0 s > ≈20.0 s compiling (cold compile, default estimates)" in decision.reason
    # 700 evaluations save 17.5 s: not enough.
    decision = decide_compile(CompileMode.AUTO, evaluations=700, eager_seconds=0.05, costs=COLD)
    assert decision.compile is False
    assert decision.reason.startswith("auto: eager, 700 evaluations")
    # A cache hit costs a fraction: the same 700 evaluations now repay it.
    hit = CompileCosts(compile_seconds=4.0, step_ratio=0.5, cached=True, measured=True)
    decision = decide_compile(CompileMode.AUTO, evaluations=700, eager_seconds=0.05, costs=hit)
    assert decision.compile is True
    assert "(cache hit expected)" in decision.reason


def test_auto_runs_eagerly_where_compiling_cannot_work_or_the_run_is_short() -> None:
    decision = decide_compile(
        CompileMode.AUTO, evaluations=10**6, unavailable="no C++ compiler found"
    )
    assert decision.compile is False
    assert decision.reason == "auto: eager, no C++ compiler found"
    short = decide_compile(CompileMode.AUTO, evaluations=MIN_EVALUATIONS - 1)
    assert short.compile is False
    assert "too few to repay a compile" in short.reason


def test_auto_needs_the_eager_time_once_the_run_is_long_enough() -> None:
    with pytest.raises(ValueError, match="eager step's time"):
        decide_compile(CompileMode.AUTO, evaluations=MIN_EVALUATIONS)


# --- where the compiled steps are kept ---------------------------------------------------------


def test_the_cache_folder_follows_the_environment(tmp_path: Path) -> None:
    home = Path.home()
    assert compile_cache_dir({}) == home / ".cache" / "gradleak" / "compile"
    assert compile_cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "gradleak" / "compile"
    both = {"XDG_CACHE_HOME": "/elsewhere", "GRADLEAK_CACHE_DIR": str(tmp_path / "g")}
    assert compile_cache_dir(both) == tmp_path / "g" / "compile"


def test_inductor_is_pointed_at_the_cache_unless_the_user_chose_a_folder(tmp_path: Path) -> None:
    environ = {"GRADLEAK_CACHE_DIR": str(tmp_path)}
    assert use_compile_cache(environ) == tmp_path / "compile" / "inductor"
    assert environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "compile" / "inductor")
    chosen = {"GRADLEAK_CACHE_DIR": str(tmp_path), "TORCHINDUCTOR_CACHE_DIR": "/mine"}
    assert use_compile_cache(chosen) == Path("/mine")
    assert chosen["TORCHINDUCTOR_CACHE_DIR"] == "/mine"
    # torch's own default, which its compiler writes there once it looked, is no choice.
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    torchs = {"GRADLEAK_CACHE_DIR": str(tmp_path), "TORCHINDUCTOR_CACHE_DIR": default_cache_dir()}
    assert use_compile_cache(torchs) == tmp_path / "compile" / "inductor"


# --- what earlier compiles cost ----------------------------------------------------------------


def test_records_turn_a_cold_compile_into_an_expected_cache_hit(tmp_path: Path) -> None:
    path = tmp_path / "steps.json"
    records = CompileRecords(path)
    unknown = records.costs("abc", parameter_tensors=10)
    assert unknown.cached is False and unknown.measured is False
    expected_cold = compiling.COLD_SECONDS_BASE + 10 * compiling.COLD_SECONDS_PER_TENSOR
    assert unknown.compile_seconds == pytest.approx(expected_cold)

    records.record("abc", compile_seconds=30.0, hit=False, step_ratio=0.25)
    again = CompileRecords(path).costs("abc", parameter_tensors=10)  # read back from the file
    assert again == CompileCosts(30.0 * WARM_FRACTION, 0.25, cached=True, measured=True)

    records.record("abc", compile_seconds=2.5, hit=True, step_ratio=None)
    assert CompileRecords(path).costs("abc", 10).compile_seconds == pytest.approx(2.5)
    assert json.loads(path.read_text())["abc"] == {
        "cold_seconds": 30.0,
        "warm_seconds": 2.5,
        "step_ratio": 0.25,
    }


def test_an_unreadable_record_file_is_said_once_and_ignored(tmp_path: Path) -> None:
    path = tmp_path / "steps.json"
    path.write_text("{not json")
    notes: list[str] = []
    records = CompileRecords(path, notes.append)
    assert len(notes) == 1 and "ignoring the compile records" in notes[0]
    assert records.costs("abc", 4).measured is False


def test_record_entries_that_are_not_numbers_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "steps.json"
    entries = {"a": 5, "b": {"cold_seconds": "x", "warm_seconds": 2.0}, "c": [1], "d": {}}
    path.write_text(json.dumps(entries))
    records = CompileRecords(path)
    assert records.costs("b", 3).compile_seconds == pytest.approx(2.0)  # the number kept
    for signature in ("a", "c", "d"):  # not a mapping of numbers: the defaults
        assert records.costs(signature, 3).measured is False


# --- a plan, without compiling -------------------------------------------------------------------


def _plan(lenet_case: Any, setting: Any, evaluations: int, **kwargs: Any) -> Any:
    case, target = lenet_case
    problem = matching_problem(case, target, "cosine")
    images = torch.randn(2, 1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    return plan_compile(
        setting, problem, images, case.client.batch.labels, None, evaluations, **kwargs
    )


def test_auto_without_a_compiler_runs_eagerly_with_one_notice(
    lenet_case: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(compiling.shutil, "which", lambda name: None)
    monkeypatch.delenv("CXX", raising=False)
    notes: list[str] = []
    plan = _plan(lenet_case, "auto", 10_000, notice=notes.append)
    assert plan.compile is False
    assert notes == [
        "--compile auto: no C++ compiler found (g++, clang++, c++ or $CXX); running uncompiled"
    ]
    assert plan.decision.reason == "auto: eager, no C++ compiler found (g++, clang++, c++ or $CXX)"


def test_auto_times_the_eager_step_and_reads_the_records(
    lenet_case: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("GRADLEAK_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(compiling, "compiler_missing", lambda device: None)
    timed: list[tuple[int, ...]] = []

    def eager(problem: Any, images: torch.Tensor, inputs: Any) -> float:
        timed.append(tuple(images.shape))
        return 0.01

    monkeypatch.setattr(compiling, "time_eager_step", eager)
    # No record: a default cold estimate, far above what 100 × 10 ms can save.
    cold = _plan(lenet_case, "auto", 100)
    assert timed == [(2, 1, 3, 32, 32)]  # the run's own stack of trials
    assert cold.compile is False and "cold compile, default estimates" in cold.decision.reason
    # A recorded cache hit of this very step, 2 s: 1000 × 10 ms × (1 − 0.4) = 6 s saved.
    records = CompileRecords(tmp_path / "compile" / compiling.RECORDS_FILE)
    records.record(cold.signature, compile_seconds=2.0, hit=True, step_ratio=0.4)
    warm = _plan(lenet_case, "auto", 1_000)
    assert warm.signature == cold.signature
    assert warm.compile is True
    assert "≈6.0 s > ≈2.0 s compiling (cache hit expected)" in warm.decision.reason


def test_on_and_off_plan_without_timing_and_report_the_decision(
    lenet_case: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_timing(*args: Any) -> float:
        raise AssertionError("on and off must not time the step")

    monkeypatch.setattr(compiling, "time_eager_step", no_timing)
    case, target = lenet_case
    plan = _plan(lenet_case, False, 10_000)
    problem = matching_problem(case, target, "cosine")
    images = torch.randn(1, 1, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    result = plan.finish(
        optimize_adam(
            problem, images, case.client.batch.labels, lr=0.1, iterations=2, progress=False
        )
    )
    assert result.compile_report == {
        "mode": "off",
        "decision": "off: compiling was not asked for",
        "cache_hits": 0,
        "cache_misses": 0,
    }
    assert _plan(lenet_case, True, 1).compile is True


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("GRADLEAK_COMPILE_TESTS") != "1",
    reason="a real inductor compile takes 25-80 s on a 2-core CPU; set GRADLEAK_COMPILE_TESTS=1",
)
def test_a_compiled_run_is_served_from_the_cache_the_second_time(
    lenet_case: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("GRADLEAK_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR")  # set by `own_cache`: gradleak sets it
    torch._dynamo.reset()  # (it sets torch's default folder, which is no user's choice)
    case, target = lenet_case
    problem = matching_problem(case, target, "cosine")
    images = torch.randn(1, 1, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    labels = case.client.batch.labels
    reports = []
    for _ in range(2):
        torch._dynamo.reset()  # a new process would compile again
        plan = plan_compile(True, problem, images, labels, None, 3)
        result = plan.finish(
            optimize_adam(problem, images, labels, lr=0.1, iterations=3, compile=True)
        )
        assert result.compiled
        reports.append(result.compile_report)
    assert reports[0]["cache_misses"] >= 1
    assert reports[1]["cache_hits"] >= 1 and reports[1]["cache_misses"] == 0
    assert (tmp_path / "compile" / "inductor").is_dir()
