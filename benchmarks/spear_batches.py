"""SPEAR beside the analytic attack on an MLP's first layer: batches of 2 to 32.

Usage: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/spear_batches.py \
    [--data-root /work/shared/data] [--model mlp1-256] [--datasets cifar10,mnist] \
    [--batches 2,4,8,16,24,32] [--max-samples N] [--out FILE.json]

For each dataset and batch size B, the test images 0 … n·B − 1 form n batches (n = 4 for
B ≤ 8, 2 for B = 16, 1 from B = 24), each one FedSGD gradient of the untrained model
(seed 0, no labels granted). Both attacks read the same gradient. "exact" is the share of
images whose matched reconstruction reaches 60 dB PSNR (`EXACT_PSNR_DB`); "certified" the
share SPEAR certifies (the zeros of its recovered ∂L/∂Z column equal the inactive units of
W x + b); seconds are the attack's own time per batch, on one thread.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gradleak import attacks
from gradleak.fl import FedSGDClient
from gradleak.metrics import evaluate_images
from gradleak.scenario import RunConfig, build_case


def _sources(root: Path) -> dict[str, dict[str, object]]:
    return {
        "cifar10": {"dataset": "cifar10", "data_root": root},
        "mnist": {"dataset": "mnist", "data_root": root / "mnist"},
    }


def batches_for(size: int) -> int:
    """How many batches of `size` images are attacked."""
    return 4 if size <= 8 else 2 if size <= 16 else 1


def run(
    source: dict[str, object], model: str, size: int, spear_options: dict[str, object]
) -> dict[str, object]:
    spear = attacks.get("spear").with_options(spear_options)
    analytic = attacks.get("analytic")
    totals = {name: {"exact": 0.0, "psnr": 0.0, "seconds": 0.0} for name in ("spear", "analytic")}
    certified = 0
    exhausted = 0
    count = batches_for(size)
    for j in range(count):
        indices = tuple(range(j * size, (j + 1) * size))
        config = RunConfig(model=model, indices=indices, batch_size=size, progress=False, **source)
        case = build_case(config)
        update = FedSGDClient(case.server.model).compute_update(case.client.batch)
        truth = case.server.decode(case.client.batch.images)
        for name, attack in (("spear", spear), ("analytic", analytic)):
            rec = attack.reconstruct(update, case.server.model, case.server.knowledge)
            scores = evaluate_images(case.server.decode(rec.images), truth)
            totals[name]["exact"] += scores.exact_fraction / count
            totals[name]["psnr"] += scores.psnr / count
            totals[name]["seconds"] += rec.seconds / count
            if name == "spear":
                certified += int(rec.details["num_certified"])
                exhausted += int(bool(rec.details["budget_exhausted"]))
    return {
        "batch": size,
        "batches": count,
        "spear": totals["spear"],
        "analytic": totals["analytic"],
        "certified": certified / (count * size),
        "budget_exhausted": exhausted,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=Path("/work/shared/data"))
    parser.add_argument("--model", default="mlp1-256")
    parser.add_argument("--datasets", default="cifar10,mnist")
    parser.add_argument("--batches", default="2,4,8,16,24,32")
    parser.add_argument("--max-samples", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="also write the rows as JSON")
    args = parser.parse_args()
    sources = _sources(args.data_root)
    options = {} if args.max_samples is None else {"max_samples": args.max_samples}
    rows = []
    for dataset in args.datasets.split(","):
        print(f"\n{dataset}, {args.model}")
        print(
            "| B | batches | SPEAR exact | certified | SPEAR s/batch | analytic exact "
            "| analytic PSNR | analytic s/batch |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for size in (int(b) for b in args.batches.split(",")):
            row = run(sources[dataset], args.model, size, options)
            rows.append({"dataset": dataset, "model": args.model, **row})
            s, a = row["spear"], row["analytic"]
            print(
                f"| {size} | {row['batches']} | {s['exact']:.2f} | {row['certified']:.2f} | "
                f"{s['seconds']:.2f} | {a['exact']:.2f} | {a['psnr']:.1f} | {a['seconds']:.3f} |",
                flush=True,
            )
    if args.out is not None:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
