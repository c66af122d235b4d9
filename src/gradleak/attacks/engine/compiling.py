"""When to torch.compile the matching step, and where the compiled artefacts are kept.

`compile` is on, off or auto (`--compile auto|on|off`; `--compile` alone is on; config
files take true, false or "auto"). Auto times the eager step on the run's own trials and
compiles when the evaluations the run plans, at the step time compiling is expected to
save, repay the expected compile time: `decide_compile`, a pure function. What a compile of
the same step cost before (and whether inductor's cache will serve it, which makes it a
fraction of a cold compile) is kept in `steps.json` beside inductor's own cache, under the
user's cache folder (`compile_cache_dir`). Every run says in its metrics what it decided
and why, and how many compiled graphs came from the cache.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from gradleak.attacks.engine.step import Notice, TrialInputs, TrialStep, print_notice
from gradleak.attacks.engine.trials import on_device, trial_inputs
from gradleak.core.errors import GradleakError
from gradleak.core.files import write_atomically

if TYPE_CHECKING:
    from gradleak.attacks.engine.trials import TrialsResult
    from gradleak.attacks.matching.problem import MatchingProblem


class CompileMode(enum.Enum):
    """Whether the step is compiled: always, never, or when the run repays it."""

    ON = "on"
    OFF = "off"
    AUTO = "auto"


COMPILE_CHOICES = tuple(mode.value for mode in CompileMode)
# What true and false in a config file mean.
_BOOLEAN = {True: CompileMode.ON, False: CompileMode.OFF}

# Below this many planned evaluations auto does not even time the step: compiling takes
# seconds (a cache hit about a second on a CPU), more than such a run's whole loop.
MIN_EVALUATIONS = 50
# Before a step's first compile is recorded, auto expects these (measured on a 2-core CPU,
# torch 2.13, one trial; docs/PERFORMANCE.md and `benchmarks/fixed_costs.py --compile`): a
# cold compile of about COLD_SECONDS_BASE + COLD_SECONDS_PER_TENSOR per parameter tensor
# (lenet, 8 tensors: 23-34 s; resnet20, 65: 72 s, minutes on a busy machine), a cache hit
# WARM_FRACTION of that (measured 2-15 %), and a compiled evaluation taking STEP_RATIO of
# the eager one (measured 0.48-0.65).
COLD_SECONDS_BASE = 16.0
COLD_SECONDS_PER_TENSOR = 0.85
WARM_FRACTION = 0.15
STEP_RATIO = 0.6
RECORDS_FILE = "steps.json"
CACHE_ENV = "GRADLEAK_CACHE_DIR"
INDUCTOR_CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"


def compile_mode(value: bool | str | CompileMode) -> CompileMode:
    """The mode a `compile` setting names.

    Args:
        value: True (on), False (off), "on", "off" or "auto" (any case), or a mode.

    Returns:
        The mode.

    Raises:
        GradleakError: any other value, in one line naming the choices.
    """
    if isinstance(value, CompileMode):
        return value
    if isinstance(value, bool):
        return _BOOLEAN[value]
    if isinstance(value, str) and value.strip().lower() in COMPILE_CHOICES:
        return CompileMode(value.strip().lower())
    raise GradleakError(
        f"compile {value!r} is not one of: {', '.join(COMPILE_CHOICES)} (or true/false)"
    )


def compile_cache_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """Where compiled steps are kept across runs.

    Args:
        environ: the environment (default: the process's).

    Returns:
        $GRADLEAK_CACHE_DIR/compile, else $XDG_CACHE_HOME/gradleak/compile, else
        ~/.cache/gradleak/compile.
    """
    if environ.get(CACHE_ENV):
        return Path(environ[CACHE_ENV]).expanduser() / "compile"
    base = environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "gradleak" / "compile"


def use_compile_cache(environ: os._Environ[str] | dict[str, str] = os.environ) -> Path:
    """Point inductor's caches at gradleak's cache folder, before the first compile.

    Called only when a step is compiled, so an eager run leaves the environment and the
    disk alone. A TORCHINDUCTOR_CACHE_DIR the user set is kept.

    Args:
        environ: the environment inductor reads (default: the process's).

    Returns:
        The folder inductor caches in.
    """
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir  # light module

    chosen = environ.get(INDUCTOR_CACHE_ENV)
    # torch writes its default there itself once its compiler has looked (torch._dynamo's
    # reset does): that value is no choice of the user's.
    if chosen and os.path.abspath(chosen) != os.path.abspath(default_cache_dir()):
        return Path(chosen)
    folder = compile_cache_dir(environ) / "inductor"
    environ[INDUCTOR_CACHE_ENV] = str(folder)
    return folder


def cache_counts() -> tuple[int, int]:
    """Inductor's FX-graph cache hits and misses so far in this process.

    Returns:
        (hits, misses); (0, 0) before anything was compiled (torch's compiler stack is not
        imported just to read them).
    """
    if "torch._dynamo" not in sys.modules:
        return 0, 0
    from torch._dynamo.utils import counters

    inductor = counters["inductor"]
    return int(inductor["fxgraph_cache_hit"]), int(inductor["fxgraph_cache_miss"])


def compiler_missing(device: torch.device) -> str | None:
    """Why torch.compile cannot work here, in a few words, or None when it may.

    Only what can be seen without importing the compiler: a CPU step needs a C++ compiler
    ($CXX, g++, clang++ or c++), a CUDA step the triton package. A failure this misses is
    caught when compiling (`TrialStep` then runs eagerly with one notice).
    """
    if device.type == "cpu":
        names = [os.environ.get("CXX", ""), "g++", "clang++", "c++"]
        if not any(shutil.which(name) for name in names if name):
            return "no C++ compiler found (g++, clang++, c++ or $CXX)"
        return None
    if device.type == "cuda":
        import importlib.util

        if importlib.util.find_spec("triton") is None:
            return "the triton package is missing"
        return None
    return f"torch.compile is not used on {device.type}"


@dataclass(frozen=True)
class CompileCosts:
    """What compiling one step is expected to cost and save.

    Attributes:
        compile_seconds: the expected time of the compile (a cache hit's when `cached`).
        step_ratio: a compiled evaluation's time over an eager one's.
        cached: this step was compiled before, so inductor's cache should serve it.
        measured: the figures come from an earlier compile of this step, not the defaults.
    """

    compile_seconds: float
    step_ratio: float
    cached: bool
    measured: bool


@dataclass(frozen=True)
class CompileDecision:
    """Whether to compile, and the one line that says why (the run's `compile_decision`)."""

    compile: bool
    reason: str


def decide_compile(
    mode: CompileMode,
    *,
    evaluations: int,
    eager_seconds: float | None = None,
    costs: CompileCosts | None = None,
    unavailable: str | None = None,
) -> CompileDecision:
    """Decide whether a run compiles its step (pure: no timing, no compiling).

    Auto compiles when the time the compiled evaluations save, evaluations × eager time ×
    (1 − step ratio), exceeds the expected compile time.

    Args:
        mode: on, off or auto.
        evaluations: the loss evaluations the run plans (Adam: iterations; L-BFGS:
            steps × inner iterations), each a call of the step on the whole stack.
        eager_seconds: one eager evaluation's time; needed by auto from `MIN_EVALUATIONS`.
        costs: the expected compile time and step ratio; needed with `eager_seconds`.
        unavailable: why compiling cannot work here (`compiler_missing`), or None.

    Returns:
        The decision and its reason.

    Raises:
        ValueError: auto with enough evaluations but no `eager_seconds` or `costs`.
    """
    if mode is CompileMode.ON:
        return CompileDecision(True, "on: compiling was asked for")
    if mode is CompileMode.OFF:
        return CompileDecision(False, "off: compiling was not asked for")
    if unavailable is not None:
        return CompileDecision(False, f"auto: eager, {unavailable}")
    if evaluations < MIN_EVALUATIONS:
        return CompileDecision(
            False, f"auto: eager, {evaluations} evaluations are too few to repay a compile"
        )
    if eager_seconds is None or costs is None:
        raise ValueError("auto needs the eager step's time and the expected costs")
    saving = evaluations * eager_seconds * (1.0 - costs.step_ratio)
    compile = saving > costs.compile_seconds
    source = "cache hit expected" if costs.cached else "cold compile"
    if not costs.measured:
        source += ", default estimates"
    return CompileDecision(
        compile,
        f"auto: {'compiled' if compile else 'eager'}, {evaluations} evaluations × "
        f"{eager_seconds * 1e3:.3g} ms at {costs.step_ratio:.2f}× when compiled save "
        f"≈{saving:.1f} s {'>' if compile else '≤'} ≈{costs.compile_seconds:.1f} s compiling "
        f"({source})",
    )


def step_signature(problem: MatchingProblem, images: torch.Tensor, inputs: TrialInputs) -> str:
    """A key for one compiled step: what changes the graph inductor compiles.

    The model's parameter names and shapes, the stacked inputs' shape, the labels' kind,
    the replay, objective and priors, the device and torch's version.
    """
    parts = (
        torch.__version__,
        images.device.type,
        tuple(images.shape),
        str(inputs.labels.dtype),
        tuple(inputs.labels.shape),
        inputs.labels_per_trial,
        inputs.target_per_trial,
        tuple((name, tuple(p.shape)) for name, p in problem.params.items()),
        repr(problem.replay.describe()),
        *(_kind(part) for part in (problem.objective, problem.prior, problem.extra_prior)),
        type(problem.model).__qualname__,
    )
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:20]


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _kind(part: object) -> str:
    """A function's or an object's qualified name (None for an absent part)."""
    return getattr(part, "__qualname__", type(part).__qualname__)


@dataclass
class CompileRecords:
    """What compiling each step cost before, kept in `RECORDS_FILE` of the cache folder.

    Args:
        path: the records file (it may not exist yet).
    """

    path: Path
    _entries: dict[str, dict[str, float]] = field(default_factory=dict, init=False)

    notice: Notice = print_notice

    def __post_init__(self) -> None:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            data = {}
        except (OSError, ValueError) as error:
            # An unreadable record costs auto only its estimates: say so and start afresh.
            self.notice(f"ignoring the compile records {self.path} ({error})")
            data = {}
        data = data if isinstance(data, dict) else {}
        # Only entries of numbers count: anything else in the file is ignored, never trusted.
        self._entries = {
            str(key): {k: float(v) for k, v in entry.items() if _number(v)}
            for key, entry in data.items()
            if isinstance(entry, dict)
        }

    def costs(self, signature: str, parameter_tensors: int) -> CompileCosts:
        """The expected costs of compiling step `signature` (defaults when unrecorded)."""
        entry = self._entries.get(signature)
        if not entry:
            cold = COLD_SECONDS_BASE + COLD_SECONDS_PER_TENSOR * parameter_tensors
            return CompileCosts(cold, STEP_RATIO, cached=False, measured=False)
        cold = float(entry.get("cold_seconds", 0.0))
        warm = float(entry.get("warm_seconds", cold * WARM_FRACTION))
        ratio = float(entry.get("step_ratio", STEP_RATIO))
        return CompileCosts(warm, ratio, cached=True, measured=True)

    def record(
        self, signature: str, *, compile_seconds: float, hit: bool, step_ratio: float | None
    ) -> None:
        """Keep what compiling step `signature` cost; written to the file at once.

        Raises:
            OSError: the file cannot be written.
        """
        entry = dict(self._entries.get(signature, {}))
        entry["warm_seconds" if hit else "cold_seconds"] = round(compile_seconds, 3)
        if step_ratio is not None:
            entry["step_ratio"] = round(min(max(step_ratio, 0.05), 2.0), 3)
        self._entries[signature] = entry
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Atomically: two runs compiling at once must not leave a torn record for a third.
        write_atomically(self.path, json.dumps(self._entries, indent=1, sort_keys=True))


def time_eager_step(problem: MatchingProblem, images: torch.Tensor, inputs: TrialInputs) -> float:
    """Seconds of one eager evaluation of the stacked step (the second of two calls: the
    first pays one-time costs)."""
    step = TrialStep(problem)
    x = images.detach()
    step(x, inputs)[2].sum().item()
    start = time.perf_counter()
    step(x, inputs)[2].sum().item()  # reading the loss waits for the device
    return time.perf_counter() - start


@dataclass
class CompilePlan:
    """A run's compile decision, and what it reports once the run is done.

    `compile` is what the engine is given; `finish` adds the report to the engine's result
    (`TrialsResult.compile_report`: mode, decision, cache hits and misses) and records the
    compile's cost for the next run's estimate.
    """

    mode: CompileMode
    decision: CompileDecision
    signature: str | None = None
    records: CompileRecords | None = None
    eager_seconds: float | None = None
    evaluations: int = 0
    counts_before: tuple[int, int] = (0, 0)
    notice: Notice = print_notice

    @property
    def compile(self) -> bool:
        return self.decision.compile

    def finish(self, result: TrialsResult) -> TrialsResult:
        """`result` with the compile report; a compiled step's cost recorded."""
        hits, misses = self._counts()
        reason = self.decision.reason
        if self.decision.compile and not result.compiled:
            reason += "; compiling failed, ran eagerly"
        report = {
            "mode": self.mode.value,
            "decision": reason,
            "cache_hits": hits,
            "cache_misses": misses,
        }
        if result.compiled and self.records is not None and self.signature is not None:
            self._record(self.records, self.signature, result)
        return replace(result, compile_report=report)

    def _record(self, records: CompileRecords, signature: str, result: TrialsResult) -> None:
        hits, misses = self._counts()
        ratio = None
        finished = not (result.interrupted or result.stopped)
        calls = result.step_calls
        if self.eager_seconds and finished and calls > 1:
            # Per step computed after the first (compiled) one, not per planned evaluation
            # (trials that converge end early); the loop's own work is included, which makes
            # the ratio a little conservative.
            later = max(result.seconds - result.compile_seconds, 0.0) / (calls - 1)
            ratio = later / self.eager_seconds
        try:
            records.record(
                signature,
                compile_seconds=result.compile_seconds,
                hit=hits > 0 and misses == 0,
                step_ratio=ratio,
            )
        except OSError as error:
            self.notice(f"cannot record the compile time in {records.path} ({error})")

    def _counts(self) -> tuple[int, int]:
        hits, misses = cache_counts()
        return hits - self.counts_before[0], misses - self.counts_before[1]


def plan_compile(
    setting: bool | str | CompileMode,
    problem: MatchingProblem,
    images: torch.Tensor,
    labels: torch.Tensor,
    targets: Mapping[str, torch.Tensor] | None,
    evaluations: int,
    *,
    notice: Notice = print_notice,
) -> CompilePlan:
    """Decide whether a run compiles its step; auto times the eager step on the trials.

    Args:
        setting: the `compile` setting (True, False, "on", "off", "auto").
        problem: the matching problem.
        images: the trials' stacked starting inputs K×B×C×H×W, as the engines take them.
        labels: their labels, as the engines take them.
        targets: one target update per trial, or None (all match `problem.target`).
        evaluations: the evaluations of the step the run plans.
        notice: where auto's one line goes when compiling cannot work here.

    Returns:
        The plan: `compile` for the engine, `finish` for its result.

    Raises:
        GradleakError: `setting` is not a compile mode.
    """
    mode = compile_mode(setting)
    counts = cache_counts()
    auto = mode is CompileMode.AUTO
    if mode is CompileMode.OFF or (auto and evaluations < MIN_EVALUATIONS):
        decision = decide_compile(mode, evaluations=evaluations)
        return CompilePlan(mode, decision, evaluations=evaluations, counts_before=counts)
    missing = compiler_missing(problem.device) if auto else None
    if missing is not None:
        notice(f"--compile auto: {missing}; running uncompiled")
        decision = decide_compile(mode, evaluations=evaluations, unavailable=missing)
        return CompilePlan(mode, decision, evaluations=evaluations, counts_before=counts)
    # A compiled run (on, or auto deciding to) records its compile time for later auto runs.
    records = CompileRecords(compile_cache_dir() / RECORDS_FILE, notice)
    images, labels = on_device(problem, images, labels)
    inputs = trial_inputs(images, labels, problem, targets, None)
    signature = step_signature(problem, images, inputs)
    eager = costs = None
    if auto:
        eager = time_eager_step(problem, images, inputs)
        costs = records.costs(signature, len(problem.params))
    decision = decide_compile(mode, evaluations=evaluations, eager_seconds=eager, costs=costs)
    return CompilePlan(
        mode, decision, signature, records, eager, evaluations, counts, notice=notice
    )
