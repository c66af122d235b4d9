"""DLG's start and line search on tuning images: time to 30 and 40 dB per variant.

Each variant is the `dlg` preset with a few options changed; every variant attacks the same
FedSGD update of each image (LeNet, CIFAR-10 test images from 100 on: 0–99 are the
evaluation protocol), the variants' order alternating image by image. PSNR against the
truth is read after every L-BFGS step outside the timed part (`dlg_reference.gradleak_dlg`).

Example (2 CPU cores, about 10 minutes):
  python benchmarks/dlg_start.py --images 100-107 --out /tmp/dlg_start
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

import torch
from dlg_reference import _first_reaching, gradleak_dlg, parse_images
from perf_report import machine, markdown_table
from selection import SHARED_DATA

from gradleak.fl import FedSGDClient
from gradleak.scenario import RunConfig, build_case

VARIANTS = {
    "standard normal": {"init": "randn"},
    "uniform(−0.5, 0.5)": {"init": "uniform"},
    "uniform, fixed step": {"init": "uniform", "line_search": "none"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", default="100-107", help="CIFAR-10 test images (from 100)")
    parser.add_argument("--out", type=Path, required=True, help="folder for table.md, runs.json")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args()
    images = parse_images(args.images)
    if min(images) < 100:
        parser.error("images 0-99 are the evaluation protocol: tune on 100 and above")
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    runs = []
    for n, index in enumerate(images):
        config = RunConfig(
            model="lenet", dataset="cifar10", data_root=SHARED_DATA, indices=(index,)
        )
        case = build_case(config)
        update = FedSGDClient(case.server.model).compute_update(case.client.batch)
        names = list(VARIANTS) if n % 2 == 0 else list(reversed(VARIANTS))
        run = {"image": index}
        for name in names:
            options = {**VARIANTS[name], "log_every": 1}  # PSNR after every step
            result = gradleak_dlg(case, update, index, options)
            run[name] = {
                "psnr": result["psnr"],
                "seconds": result["seconds"],
                "to_30db": _first_reaching(result["trace"], 30.0),
                "to_40db": _first_reaching(result["trace"], 40.0),
            }
        print(json.dumps(run), flush=True)
        runs.append(run)
    rows = []
    for name in VARIANTS:
        psnrs = [r[name]["psnr"] for r in runs]
        reached = [r[name]["to_40db"] for r in runs if r[name]["to_40db"] is not None]
        finite = [p for p in psnrs if math.isfinite(p)]
        rows.append(
            [
                name,
                f"{sum(p >= 30 for p in finite)} / {len(runs)}",
                f"{sum(p >= 40 for p in finite)} / {len(runs)}",
                f"{statistics.median(reached):.1f}" if reached else "—",
                f"{min(finite):.1f}" if finite else "NaN",
            ]
        )
    header = ["start", "≥ 30 dB", "≥ 40 dB", "median s to 40 dB (reached)", "worst PSNR"]
    text = f"{machine()}\n\n{markdown_table(header, rows)}\n"
    (args.out / "table.md").write_text(text)
    (args.out / "runs.json").write_text(json.dumps(runs, indent=1))
    print(text)


if __name__ == "__main__":
    main()
