"""Wall time of an Inverting Gradients study run as stacked attacks against cell by cell.

The study: IG (the preset: 8 restarts, Adam) on an untrained ResNet20, one CIFAR-10 test
image per cell (images 0–99 by default), 200 iterations. Its images are taken in blocks of
`CHUNK_CELLS` (one stacked chunk each); every block runs once as a stacked sweep and once
cell by cell (`stack=False`), alternating which goes first, so that both see the same load
on the machine. Both start from scratch (what --out held from an earlier call is replaced).
Reported: the seconds of each (the sweeps' wall time, tables included),
their ratio, and the largest |ΔPSNR| of one image between the two.

Run from the repository root (the full study takes hours on a 2-core CPU):
  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/stacked_study.py --out /tmp/stacked
  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/stacked_study.py --images 8 --iterations 20
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import time
from pathlib import Path

from gradleak.studies.stacking import CHUNK_CELLS
from gradleak.studies.sweep.runner import run_sweep
from gradleak.studies.sweep.spec import parse_spec

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"  # holds cifar-10-batches-py/
OUT = ROOT / "bench" / "stacked-study"


def _spec(first: int, last: int, iterations: int, restarts: int | None, data: Path):  # noqa: ANN202
    options: dict[str, object] = {"iterations": iterations}
    if restarts is not None:
        options["restarts"] = restarts
    return parse_spec(
        {
            "name": f"ig-resnet20-{first}-{last}",
            "attacks": ["ig"],
            "models": ["resnet20"],
            "base": {"dataset": "cifar10", "data_root": str(data)},
            "images": f"{first}-{last}",
            "options": {"ig": options},
        },
        "stacked study",
    )


def _psnr(sweep_dir: Path) -> dict[str, float]:
    with (sweep_dir / "results.csv").open(newline="") as handle:
        return {row["cell"]: float(row["psnr"]) for row in csv.DictReader(handle)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100, help="images 0..N-1 (100)")
    parser.add_argument("--iterations", type=int, default=200, help="IG iterations (200)")
    parser.add_argument("--restarts", type=int, help="IG restarts (default: the preset's 8)")
    parser.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    parser.add_argument("--data-root", type=Path, default=DATA, help=f"CIFAR-10's folder ({DATA})")
    parser.add_argument("--out", type=Path, default=OUT, help=f"the studies' folder ({OUT})")
    args = parser.parse_args()
    seconds = {"stacked": 0.0, "cell by cell": 0.0}
    for label in seconds:  # from scratch: a sweep would reuse what an earlier call finished
        shutil.rmtree(args.out / label.replace(" ", "-"), ignore_errors=True)
    psnr: dict[str, dict[str, float]] = {"stacked": {}, "cell by cell": {}}
    for block, first in enumerate(range(0, args.images, CHUNK_CELLS)):
        last = min(first + CHUNK_CELLS, args.images) - 1
        spec = _spec(first, last, args.iterations, args.restarts, args.data_root)
        order = [("stacked", True), ("cell by cell", False)]
        for label, stack in order if block % 2 == 0 else order[::-1]:
            out = args.out / label.replace(" ", "-") / f"images-{first}-{last}"
            start = time.perf_counter()
            result = run_sweep(spec, out, progress=False, threads=args.threads, stack=stack)
            seconds[label] += time.perf_counter() - start
            if result.interrupted or result.failed:
                raise SystemExit(f"the {label} sweep of images {first}-{last} did not finish")
            psnr[label].update(_psnr(out))
            print(f"images {first}-{last} {label}: {seconds[label]:.1f} s so far", flush=True)
    delta = max(abs(psnr["stacked"][c] - psnr["cell by cell"][c]) for c in psnr["stacked"])
    ratio = seconds["cell by cell"] / seconds["stacked"]
    summary = {
        "images": args.images,
        "iterations": args.iterations,
        "restarts": args.restarts,
        "stacked_seconds": round(seconds["stacked"], 2),
        "cell_by_cell_seconds": round(seconds["cell by cell"], 2),
        "speedup": round(ratio, 2),
        "max_abs_delta_psnr": delta,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"{args.images} images, {args.iterations} iterations: stacked "
        f"{seconds['stacked']:.1f} s, cell by cell {seconds['cell by cell']:.1f} s, "
        f"{ratio:.2f}x faster stacked; max |dPSNR| {delta:.2e} dB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
