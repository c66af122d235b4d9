"""Robbing the Fed's imprint attack on resnet20: share of a batch recovered exactly.

Usage: OMP_NUM_THREADS=2 .venv/bin/python benchmarks/imprint_batches.py \
    [--data-root /work/shared/data] [--part cifar|imagenet|all] [--out FILE.json]

A malicious server (`--malicious-server`) puts an imprint block of K bins (statistic: a
fixed random projection, bins at the quantiles of N(0, 1)) in front of the untrained
resnet20 (seed 0) and attacks the update its clients send:

- cifar: CIFAR-10 test images 0..B-1 for B = 8, 32, 64, 128 and K = 64, 256, 1024, under
  FedSGD (one client), FedSGD with 4 users' gradients averaged (B/4 images each, the mean
  only), and FedAvg with 5 local steps (lr 0.01, full batch; a weight difference).
- imagenet: the 224-px ImageNet validation crops of `imagenet-val` (20 images there), B = 8
  and 20, the same K and protocols (the 4 users hold B/4 images each).

"exact" is the share of the batch whose matched reconstruction reaches 60 dB PSNR
(`gradleak.metrics.image.EXACT_PSNR_DB`); "found" the distinct inputs the attack read per
image of the batch (a bin holding two images gives one mixture); "expected" the chance an
image has a bin of its own above the lowest threshold if the statistic really is N(0, 1):
(K/(K+1)) · (1 − 1/(K+1))^(B−1).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from gradleak.scenario import RunConfig
from gradleak.scenario.run import attack_case

BINS = (64, 256, 1024)
PROTOCOLS = {
    "FedSGD": {},
    "FedSGD, 4 users averaged": {"users": 4},
    "FedAvg, 5 local steps": {"protocol": "fedavg", "local_steps": 5},
}


def _parts(root: Path) -> dict[str, tuple[dict[str, object], tuple[int, ...]]]:
    return {
        "cifar": ({"dataset": "cifar10", "data_root": root}, (8, 32, 64, 128)),
        "imagenet": (
            {"dataset": "folder", "data_root": root / "imagenet-val", "image_size": 224},
            (8, 20),
        ),
    }


def expected_alone(bins: int, batch: int) -> float:
    """The chance one image has a bin to itself above q_1 under the assumed N(0, 1)."""
    share = 1.0 / (bins + 1)
    return (1 - share) * (1 - share) ** (batch - 1)


def run_cell(data: dict[str, object], batch: int, bins: int, protocol: dict) -> dict:
    users = int(protocol.get("users", 1))
    config = RunConfig(
        attack="imprint",
        model="resnet20",
        indices=tuple(range(batch)),
        batch_size=batch // users,
        malicious_server=True,
        attack_options={"bins": bins},
        progress=False,
        **data,
        **protocol,
    )
    start = time.perf_counter()
    outcome = attack_case(config)
    total = time.perf_counter() - start
    details = outcome.reconstruction.details
    return {
        "batch": batch,
        "bins": bins,
        "exact": outcome.evaluation.exact_fraction,
        "psnr": outcome.evaluation.psnr,
        "found": (batch - int(details["images_not_separated"])) / batch,
        "split_inputs": details["split_inputs"],
        "expected": expected_alone(bins, batch),
        "attack_seconds": outcome.reconstruction.seconds,
        "run_seconds": total,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=Path("/work/shared/data"))
    parser.add_argument("--part", choices=("cifar", "imagenet", "all"), default="all")
    parser.add_argument("--out", type=Path, default=None, help="also write the rows as JSON")
    args = parser.parse_args()
    parts = _parts(args.data_root)
    chosen = list(parts) if args.part == "all" else [args.part]
    rows = []
    for part in chosen:
        data, batches = parts[part]
        for name, protocol in PROTOCOLS.items():
            print(f"\n{part}: {name}")
            print("| B | bins | exact | found | expected | PSNR (dB) | attack s | run s |")
            print("|---|---|---|---|---|---|---|---|")
            for batch in batches:
                for bins in BINS:
                    row = run_cell(data, batch, bins, protocol)
                    rows.append({"part": part, "protocol": name, **row})
                    print(
                        f"| {batch} | {bins} | {row['exact']:.2f} | {row['found']:.2f} | "
                        f"{row['expected']:.2f} | {row['psnr']:.1f} | "
                        f"{row['attack_seconds']:.2f} | {row['run_seconds']:.1f} |",
                        flush=True,
                    )
    if args.out is not None:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
