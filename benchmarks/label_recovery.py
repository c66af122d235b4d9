"""Label strategies alone on FedSGD batches: set and count accuracy per model, data and size.

Example (2 CPU cores, a few minutes):
  OMP_NUM_THREADS=1 python benchmarks/label_recovery.py --data-root /work/shared/data \
      --batches 20 --out bench/labels [--mnist-checkpoint bench/ckpt/lenet-mnist.pt]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from gradleak.studies.labels import evaluate_label_recovery, label_table, write_label_results

CASES = (("lenet", "cifar10"), ("lenet", "mnist"), ("resnet20", "cifar10"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", type=Path, required=True)
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--batch-sizes", default="1,8,32,64")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mnist-checkpoint", type=Path, help="trained lenet/MNIST state, optional")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    torch.set_num_threads(1)
    sizes = tuple(int(b) for b in args.batch_sizes.split(","))
    runs: list[tuple[str, str, Path | None]] = [(m, d, None) for m, d in CASES]
    if args.mnist_checkpoint is not None:
        runs.append(("lenet", "mnist", args.mnist_checkpoint))
    rows = []
    for model, dataset, checkpoint in runs:
        start = time.perf_counter()
        rows += evaluate_label_recovery(
            model,
            dataset,
            args.data_root,
            batch_sizes=sizes,
            batches=args.batches,
            checkpoint=checkpoint,
            seed=args.seed,
        )
        print(
            f"{model}/{dataset} ({checkpoint or 'untrained'}): {time.perf_counter() - start:.1f} s"
        )
    write_label_results(rows, args.out)
    print(label_table(rows), end="")


if __name__ == "__main__":
    main()
