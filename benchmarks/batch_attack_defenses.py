"""What client defenses do to the batch-scale closed forms: SPEAR and the imprint attack.

Usage: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/batch_attack_defenses.py \
    [--data-root /work/shared/data] [--out FILE.json]

One FedSGD gradient of CIFAR-10 test images, each defended on the client before it is
shared (`--defense`), then attacked:

- SPEAR on the untrained mlp1-256 (seed 0), images 0-7 (B = 8: exact without a defense);
- imprint (a malicious server, 1024 bins) on LeNet, images 0-31 (B = 32), with the block's
  default gain 0.1 and with gain 100, what a server expecting noise would send (LeNet, not
  resnet20: DP-SGD needs a model without BatchNorm).

"exact" is the share of the batch whose matched reconstruction reaches 60 dB PSNR.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gradleak.scenario import RunConfig
from gradleak.scenario.run import attack_case

DEFENSES = (
    "none",
    "noise:gaussian:1e-12",
    "noise:gaussian:1e-8",
    "noise:gaussian:1e-4",
    "prune:0.1",
    "prune:0.9",
    "precision:float16",
    "dpsgd:1.0:0",
    "dpsgd:1.0:0.01",
    "dpsgd:1.0:1.0",
)


def _columns(root: Path) -> dict[str, dict[str, object]]:
    data = {"dataset": "cifar10", "data_root": root}
    imprint = {"attack": "imprint", "model": "lenet", "indices": tuple(range(32))}
    return {
        "SPEAR, mlp1-256, B=8": {
            "attack": "spear",
            "model": "mlp1-256",
            "indices": tuple(range(8)),
            **data,
        },
        "imprint gain 0.1, lenet, B=32": {
            **imprint,
            "attack_options": {"bins": 1024, "gain": 0.1},
            **data,
        },
        "imprint gain 100, lenet, B=32": {
            **imprint,
            "attack_options": {"bins": 1024, "gain": 100.0},
            **data,
        },
    }


def run_cell(column: dict[str, object], defense: str) -> dict[str, float]:
    settings = dict(column)
    indices = settings.pop("indices")
    config = RunConfig(
        **settings,
        indices=indices,
        batch_size=len(indices),
        malicious_server=settings["attack"] == "imprint",
        defenses=() if defense == "none" else (defense,),
        progress=False,
    )
    outcome = attack_case(config)
    return {"exact": outcome.evaluation.exact_fraction, "psnr": outcome.evaluation.psnr}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=Path("/work/shared/data"))
    parser.add_argument("--out", type=Path, default=None, help="also write the rows as JSON")
    args = parser.parse_args()
    columns = _columns(args.data_root)
    print("| defense | " + " | ".join(f"{name}: exact (PSNR)" for name in columns) + " |")
    print("|---|" + "---|" * len(columns))
    rows = []
    for defense in DEFENSES:
        cells = {name: run_cell(column, defense) for name, column in columns.items()}
        rows.append({"defense": defense, **cells})
        shown = " | ".join(f"{c['exact']:.2f} ({c['psnr']:.1f})" for c in cells.values())
        print(f"| {defense} | {shown} |", flush=True)
    if args.out is not None:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
