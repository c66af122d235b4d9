"""PSNR of R-GAP against DLG and IG on the untrained `cnn6` (seed 0), CIFAR-10 test images.

Usage: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/rgap_cnn6.py [--data-root DIR]
       [--images 0-9] [--no-dlg] [--no-ig]

Each image is one FedSGD gradient (batch 1). DLG runs its default 300 L-BFGS steps, IG
1000 iterations with one restart. Until `cnn6` and `rgap` are in the registries this script
adds them for its own process. "rank" summarises R-GAP's per-layer rank report: the layers
whose system had full rank out of all conv layers.
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path
from typing import cast

import torch

from gradleak import attacks
from gradleak.attacks import registry as attack_registry
from gradleak.attacks.closed_form import rgap
from gradleak.attacks.reconstruction import Reconstruction
from gradleak.fl import FedSGDClient
from gradleak.metrics import evaluate_images
from gradleak.models import registry as model_registry
from gradleak.models.cnn6 import CNN6
from gradleak.scenario import RunConfig, build_case
from gradleak.scenario.case import Case


def _register() -> None:
    """Add cnn6 and rgap to this process's registries unless they are there already."""
    try:
        model_registry.build_model("cnn6", num_classes=10)
    except Exception:  # the registry raises GradleakError for an unknown name
        entry = model_registry._Entry(
            re.compile(r"cnn6"), "cnn6", lambda _m, classes, ch, size: CNN6(classes, ch, size)
        )
        model_registry._TABLE = (*model_registry._TABLE, entry)
    attack_registry.ATTACKS.setdefault("rgap", (rgap.build, "R-GAP (Zhu & Blaschko 2021)"))


def _psnr(case: Case, rec: Reconstruction) -> float:
    pixels = case.server.decode(rec.images.detach())
    evaluation = evaluate_images(
        pixels, case.server.decode(case.client.batch.images), None, case.client.batch.labels
    )
    return float(evaluation.per_image[0]["psnr"])


def _indices(text: str) -> list[int]:
    if "-" in text:
        first, last = text.split("-")
        return list(range(int(first), int(last) + 1))
    return [int(i) for i in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=Path("/work/shared/data"))
    parser.add_argument("--images", default="0-9", help="e.g. 0-9 or 0,3,5")
    parser.add_argument("--no-dlg", action="store_true")
    parser.add_argument("--no-ig", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    _register()
    print(
        "| image | R-GAP PSNR | DLG PSNR | IG PSNR | rank (full/layers) | R-GAP s | DLG s | IG s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for index in _indices(args.images):
        config = RunConfig(
            model="cnn6",
            dataset="cifar10",
            data_root=args.data_root,
            indices=(index,),
            progress=False,
        )
        case = build_case(config)
        update = FedSGDClient(case.server.model).compute_update(case.client.batch)
        rec = rgap.RGAPAttack().reconstruct(update, case.server.model, case.server.knowledge)
        ranks = cast(list[tuple[int, int, int]], rec.details["ranks"])
        full = sum(rank >= unknowns for unknowns, _, rank in ranks)
        cells = [f"{_psnr(case, rec):.2f}"]
        times = [f"{rec.seconds:.1f}"]
        runs = [("dlg", {}, args.no_dlg), ("ig", {"iterations": 1000, "restarts": 1}, args.no_ig)]
        for name, options, skip in runs:
            if skip:
                cells.append("—")
                times.append("—")
                continue
            attack = attacks.get(name)
            if options:
                attack = attack.with_options(options)
            start = time.perf_counter()
            other = attack.reconstruct(
                update, case.server.model, case.server.knowledge, seed=0, progress=False
            )
            cells.append(f"{_psnr(case, other):.2f}")
            times.append(f"{time.perf_counter() - start:.1f}")
        print(
            f"| {index} | {' | '.join(cells)} | {full}/{len(ranks)} | {' | '.join(times)} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
