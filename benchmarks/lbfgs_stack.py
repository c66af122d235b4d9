"""Stacked L-BFGS vs the same trials one by one: seconds for K = 1, 4, 16 on LeNet.

One problem (DLG's: LeNet, the FedSGD update of CIFAR-10 test image 0, squared-L2
distance, soft labels optimised), K starts drawn from one seed. "stacked" runs the K trials
as one stack (`optimize_lbfgs`), "one by one" runs K stacks of one trial each on the same
starts; both with the same line search and steps. Runs alternate (stacked first on even
rounds) and the median of `--rounds` is kept. The issue's target: 16 stacked trials cost at
most 4× one trial.

Example (2 CPU cores, a few minutes):
  python benchmarks/lbfgs_stack.py --out /tmp/lbfgs_stack
  python benchmarks/lbfgs_stack.py --ks 1,4 --steps 5 --rounds 1 --out /tmp/s   # smoke
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from perf_report import machine, markdown_table
from selection import SHARED_DATA

from gradleak.attacks.engine.lbfgs import optimize_lbfgs
from gradleak.attacks.matching.objectives import get_objective
from gradleak.attacks.matching.problem import MatchingProblem, attacker_model
from gradleak.fl import FedSGDClient
from gradleak.modalities.image import total_variation
from gradleak.scenario import RunConfig, build_case


def problem_and_starts(k: int, seed: int) -> tuple[MatchingProblem, torch.Tensor, torch.Tensor]:
    """DLG's problem on CIFAR-10 test image 0 and K starts (images and soft labels)."""
    config = RunConfig(model="lenet", data_root=SHARED_DATA, indices=(0,), progress=False)
    case = build_case(config)
    update = FedSGDClient(case.server.model).compute_update(case.client.batch)
    problem = MatchingProblem(
        attacker_model(case.server.model, "train"),
        dict(update.tensors),
        get_objective("l2"),
        0.0,
        prior=total_variation,
    )
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(k, *case.client.batch.images.shape, generator=g)
    labels = torch.randn(k, case.client.batch.images.shape[0], 10, generator=g)
    return problem, images, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ks", default="1,4,16", help="stack sizes (default 1,4,16)")
    parser.add_argument("--steps", type=int, default=30, help="outer steps (default 30)")
    parser.add_argument("--inner", type=int, default=20, help="iterations per step")
    parser.add_argument("--line-search", default="unit_first")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (median kept)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--out", type=Path, required=True, help="folder for table.md, runs.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    ks = [int(k) for k in args.ks.split(",")]
    problem, all_images, all_labels = problem_and_starts(max(ks), seed=0)
    options = {
        "steps": args.steps,
        "inner_iterations": args.inner,
        "line_search": args.line_search,
        "progress": False,
        "log_every": args.steps,
    }

    def stacked(k: int) -> tuple[float, int]:
        start = time.perf_counter()
        result = optimize_lbfgs(problem, all_images[:k], all_labels[:k], **options)
        return time.perf_counter() - start, result.loss_evaluations

    def one_by_one(k: int) -> tuple[float, int]:
        start, evaluations = time.perf_counter(), 0
        for i in range(k):
            result = optimize_lbfgs(
                problem, all_images[i : i + 1], all_labels[i : i + 1], **options
            )
            evaluations += result.loss_evaluations
        return time.perf_counter() - start, evaluations

    stacked(1)  # warm-up: first calls pay for lazy initialisation
    runs = []
    for k in ks:
        times: dict[str, list[float]] = {"stacked": [], "one_by_one": []}
        evaluations = {}
        for r in range(args.rounds):
            order = [("stacked", stacked), ("one_by_one", one_by_one)]
            if r % 2:
                order.reverse()
            for name, run in order:
                seconds, evaluations[name] = run(k)
                times[name].append(seconds)
        runs.append(
            {
                "k": k,
                "stacked_s": statistics.median(times["stacked"]),
                "one_by_one_s": statistics.median(times["one_by_one"]),
                "evaluations": evaluations,
                "times": times,
            }
        )
        print(runs[-1], flush=True)
    one = next((r["stacked_s"] for r in runs if r["k"] == 1), None)
    rows = [
        [
            r["k"],
            f"{r['stacked_s']:.2f}",
            f"{r['one_by_one_s']:.2f}",
            f"{r['one_by_one_s'] / r['stacked_s']:.2f}",
            "—" if one is None else f"{r['stacked_s'] / one:.2f}",
            r["evaluations"]["stacked"],
        ]
        for r in runs
    ]
    header = [
        "K",
        "stacked s",
        "one by one s",
        "one by one / stacked",
        "stacked / one trial",
        "trial evaluations",
    ]
    text = (
        f"{machine()}\n\nLeNet, DLG's problem, {args.steps} outer steps × up to {args.inner} "
        f"iterations, line search {args.line_search}, median of {args.rounds}\n\n"
        + markdown_table(header, rows)
    )
    (args.out / "table.md").write_text(text + "\n")
    (args.out / "runs.json").write_text(json.dumps(runs, indent=1))
    print(text)


if __name__ == "__main__":
    main()
