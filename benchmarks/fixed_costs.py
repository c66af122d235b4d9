"""What a user pays besides the optimisation: process start, and an attack's fixed cost.

Measured side by side, interleaved repeat by repeat, for each source tree given (default:
this checkout's src/; pass an older tree, e.g. `git archive HEAD | tar -x -C /tmp/before`,
with `--tree before=/tmp/before/src` for a before/after table):

- process start, each in a fresh interpreter: `gradleak --help` (what the console script
  runs), `gradleak attack --help`, `python -c "import gradleak"`;
- an attack's fixed cost: in a fresh interpreter, the wall time of `gradleak attack ...
  --iterations 1` (from `main`, after importing the attack command and the scenario
  modules, which process start pays) minus
  the optimisation loop's own time (metrics.json `seconds`); then the same attack again in
  that process ("warm": what the next sweep cell pays). The loop's first step can hold
  one-time costs too (torch.func's first gradient imports torch._dynamo): the
  "first-step excess" is the first run's loop time minus the warm run's.

With --compile, for IG on lenet and resnet20: the eager step's time, a cold compile (an
empty cache folder), a warm one (the same folder again, a new process) and the compiled
step's time, and the iterations after which compiling pays.

Each figure is the median of --repeats. Markdown on stdout, everything as JSON in --json.
Run from the repository root (2-core CPU: use one thread, nice it when others work):

  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/fixed_costs.py --repeats 5 \
      [--tree before=/tmp/before/src] [--compile] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# What the `gradleak` console script runs.
CONSOLE = "import sys; from gradleak.cli import main; sys.argv[0] = 'gradleak'; sys.exit(main())"
STARTS = {
    "gradleak --help": ["-c", CONSOLE, "--help"],
    "gradleak attack --help": ["-c", CONSOLE, "attack", "--help"],
    'python -c "import gradleak"': ["-c", "import gradleak"],
}
# The attacks whose fixed cost is measured, one iteration each.
ATTACKS = {
    "default (dlg, lenet)": [],
    "dlg, lenet": ["--attack", "dlg", "--model", "lenet"],
    "ig, resnet20": ["--attack", "ig", "--model", "resnet20"],
}
# Runs in a fresh interpreter: the attack twice, each timed from `main`; prints JSON.
DRIVER = """
import json, sys, time
from gradleak.cli.app import main
import gradleak.cli.attack, gradleak.scenario.run  # process start, not the run's cost
argv, out = json.loads(sys.argv[1]), sys.argv[2]
runs = []
for i in range(2):
    start = time.perf_counter()
    code = main([*argv, "--out", f"{out}/{i}", "--overwrite", "--no-progress", "--threads", "1"])
    total = time.perf_counter() - start
    metrics = json.load(open(f"{out}/{i}/metrics.json"))
    runs.append({"code": code, "total": total, "loop": metrics["seconds"],
                 "compiled": metrics["compiled"], "compile_seconds": metrics["compile_seconds"],
                 "cache_hits": metrics.get("compile_cache_hits")})
print(json.dumps(runs))
"""


def _env(tree: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    return {**env, **(extra or {})}


def _wall(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def _driver(tree: Path, argv: list[str], env: dict[str, str] | None = None) -> list[dict]:
    with tempfile.TemporaryDirectory() as out:
        done = subprocess.run(
            [sys.executable, "-c", DRIVER, json.dumps(argv), out],
            env=_env(tree, env),
            check=True,
            capture_output=True,
            text=True,
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_starts(trees: dict[str, Path], repeats: int) -> dict[str, dict[str, float]]:
    """Median wall seconds of each process start, by tree (interleaved)."""
    times: dict[str, dict[str, list[float]]] = {t: {s: [] for s in STARTS} for t in trees}
    for _ in range(repeats):
        for name, args in STARTS.items():
            for label, tree in trees.items():
                times[label][name].append(_wall(args, _env(tree)))
    return {t: {s: statistics.median(v) for s, v in by.items()} for t, by in times.items()}


def measure_attacks(trees: dict[str, Path], repeats: int) -> dict[str, dict[str, dict]]:
    """Median fixed costs of each attack (1 iteration), by tree (interleaved)."""
    rows: dict[str, dict[str, list[list[dict]]]] = {t: {a: [] for a in ATTACKS} for t in trees}
    for _ in range(repeats):
        for name, flags in ATTACKS.items():
            for label, tree in trees.items():
                rows[label][name].append(_driver(tree, ["attack", *flags, "--iterations", "1"]))
    result: dict[str, dict[str, dict]] = {}
    for label, by in rows.items():
        result[label] = {}
        for name, runs in by.items():
            first = [r[0] for r in runs]
            warm = [r[1] for r in runs]

            def med(values: list[float]) -> float:
                return statistics.median(values)

            result[label][name] = {
                "total": med([r["total"] for r in first]),
                "loop": med([r["loop"] for r in first]),
                "fixed": med([r["total"] - r["loop"] for r in first]),
                "warm_total": med([r["total"] for r in warm]),
                "warm_fixed": med([r["total"] - r["loop"] for r in warm]),
                "first_step_excess": med(
                    [a["loop"] - b["loop"] for a, b in zip(first, warm, strict=True)]
                ),
            }
    return result


def measure_compile(tree: Path, repeats: int, iterations: int) -> dict[str, dict[str, float]]:
    """IG with one restart: eager and compiled step times, cold and warm compile times."""
    out: dict[str, dict[str, float]] = {}
    for model in ("lenet", "resnet20"):
        base = ["attack", "--attack", "ig", "--model", model, "--restarts", "1"]
        eager_steps, cold, warm, compiled_steps = [], [], [], []
        for _ in range(repeats):
            # Eager: the warm run of a process, N iterations against 1 (first-step costs out).
            one = _driver(tree, [*base, "--iterations", "1"])[1]["loop"]
            many = _driver(tree, [*base, "--iterations", str(iterations)])[1]["loop"]
            eager_steps.append((many - one) / (iterations - 1))
            with tempfile.TemporaryDirectory() as cache:
                # An empty cache folder: the first compile is cold, the second warm.
                env = {
                    "GRADLEAK_CACHE_DIR": cache,
                    "TORCHINDUCTOR_CACHE_DIR": f"{cache}/compile/inductor",
                }
                for target in (cold, warm):
                    run = _driver(tree, [*base, "--iterations", str(iterations), "--compile"], env)[
                        0
                    ]
                    target.append(run["compile_seconds"])
                    if target is warm:
                        loop = run["loop"] - run["compile_seconds"]
                        compiled_steps.append(loop / (iterations - 1))
        eager, compiled = statistics.median(eager_steps), statistics.median(compiled_steps)
        saving = eager - compiled
        out[model] = {
            "eager_step": eager,
            "compiled_step": compiled,
            "cold_compile": statistics.median(cold),
            "warm_compile": statistics.median(warm),
            "break_even_cold": statistics.median(cold) / saving if saving > 0 else float("inf"),
            "break_even_warm": statistics.median(warm) / saving if saving > 0 else float("inf"),
        }
    return out


def markdown(starts: dict, attacks: dict, compiled: dict | None) -> str:
    trees = list(starts)
    lines = ["### Process start (seconds, median)", ""]
    lines += ["| command | " + " | ".join(trees) + " |", "|---" * (len(trees) + 1) + "|"]
    for name in STARTS:
        lines.append(f"| `{name}` | " + " | ".join(f"{starts[t][name]:.2f}" for t in trees) + " |")
    lines += ["", "### An attack's fixed cost, 1 iteration (seconds, median)", ""]
    columns = ("total", "loop", "fixed", "first_step_excess", "warm_total", "warm_fixed")
    lines.append("| attack | tree | " + " | ".join(columns) + " |")
    lines.append("|---" * (len(columns) + 2) + "|")
    for name in ATTACKS:
        for t in trees:
            row = attacks[t][name]
            lines.append(f"| {name} | {t} | " + " | ".join(f"{row[c]:.3f}" for c in columns) + " |")
    if compiled:
        lines += ["", "### torch.compile of IG's step, 1 restart (median)", ""]
        head = "| model | eager ms/step | compiled ms/step | cold compile s | warm compile s "
        lines.append(head + "| pays after (cold) | pays after (warm) |")
        lines.append("|---" * 7 + "|")
        for model, r in compiled.items():
            lines.append(
                f"| {model} | {r['eager_step'] * 1e3:.1f} | {r['compiled_step'] * 1e3:.1f} | "
                f"{r['cold_compile']:.1f} | {r['warm_compile']:.1f} | "
                f"{r['break_even_cold']:.0f} it | {r['break_even_warm']:.0f} it |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--tree",
        action="append",
        default=[],
        metavar="LABEL=SRC",
        help="a source tree to measure beside this checkout's (repeatable)",
    )
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile")
    parser.add_argument("--compile-iterations", type=int, default=60)
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args()
    trees = {label: Path(path) for label, path in (t.split("=", 1) for t in args.tree)}
    trees["this checkout"] = ROOT / "src"
    starts = measure_starts(trees, args.repeats)
    attacks = measure_attacks(trees, args.repeats)
    compiled = None
    if args.compile:
        compiled = measure_compile(ROOT / "src", args.repeats, args.compile_iterations)
    print(markdown(starts, attacks, compiled))
    if args.json:
        data = {"starts": starts, "attacks": attacks, "compile": compiled}
        args.json.write_text(json.dumps(data, indent=1))


if __name__ == "__main__":
    main()
