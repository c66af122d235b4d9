"""PSNR of the analytic fully-connected attack on the `mlp` model, batches of 1, 2 and 4.

Usage: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/analytic_mlp.py [--data-root /work/shared/data]

Each dataset's images 0-9 are attacked as 10 single-image updates, 5 batches of 2 and
2 batches of 4 (images 8-9 are left out at B=4), one FedSGD gradient each on the untrained
`mlp` (seed 0). PSNR is scored after Hungarian matching; "usable rows" is the mean number
of first-layer rows whose bias gradient passed the threshold.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from gradleak.attacks.closed_form.analytic import AnalyticAttack
from gradleak.fl import FedSGDClient
from gradleak.metrics import evaluate_images
from gradleak.scenario import RunConfig, build_case

IMAGES = tuple(range(10))
BATCH_SIZES = (1, 2, 4)


def _datasets(root: Path) -> dict[str, dict[str, object]]:
    return {
        "cifar10": {"dataset": "cifar10", "data_root": root},
        "mnist": {"dataset": "mnist", "data_root": root / "mnist"},
    }


def _row(name: str, source: dict[str, object], b: int) -> str:
    attack = AnalyticAttack()
    psnrs: list[float] = []
    usable: list[int] = []
    groups = [IMAGES[i : i + b] for i in range(0, len(IMAGES) - b + 1, b)]
    for group in groups:
        config = RunConfig(model="mlp", indices=group, batch_size=b, progress=False, **source)
        case = build_case(config)
        update = FedSGDClient(case.server.model).compute_update(case.client.batch)
        rec = attack.reconstruct(update, case.server.model, case.server.knowledge)
        evaluation = evaluate_images(
            case.server.decode(rec.images), case.server.decode(case.client.batch.images)
        )
        psnrs.extend(p["psnr"] for p in evaluation.per_image)
        usable.append(int(rec.details["usable_rows"]))
    shown = f"{groups[0][0]}-{groups[-1][-1]}"
    mean_usable = sum(usable) / len(usable)
    return (
        f"| {name} | {b} | {shown} | {sum(psnrs) / len(psnrs):.2f} | {min(psnrs):.2f} "
        f"| {mean_usable:.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=Path("/work/shared/data"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| dataset | B | images | mean PSNR (dB) | min PSNR (dB) | usable rows |")
    print("|---|---|---|---|---|---|")
    for name, source in _datasets(args.data_root).items():
        for b in BATCH_SIZES:
            print(_row(name, source, b), flush=True)


if __name__ == "__main__":
    main()
