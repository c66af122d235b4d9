"""DLG, iDLG, DLG-ADMM and iDLG-ADMM on MNIST, CIFAR-100 and LFW, plus two FedADMM variants.

Each study is one `gradleak compare` call (LeNet, batch 1, DLG's L-BFGS for 300 steps) into
bench/admm-compare/<study>/:

  main       the four attacks; FedADMM in round 1 with one local step (η 0.01, ρ 1), the
             -admm attacks replaying the client's round (−Δ'/η matched with −Δ/η)
  round2     the -admm attacks on round 2's increment; the client keeps x and π, and the
             threat model grants them (--client-state-known)
  gradient   the -admm attacks in round 1 with the plain reading (--admm-reading gradient:
             −Δ/η matched with one gradient), for contrast with the replay

Finished runs are kept, so a re-run only does what is missing. With --figures DIR the main
study's snapshot grid of image 0 and its convergence curves are copied there as
admm-compare-grid-image0.png and admm-compare-curves-<dataset>.png, and the gradient
reading's MNIST curves as admm-compare-gradient-curves-mnist.png. Run from the repository
root:
  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/admm_compare.py [--study main] [--index 0 1 2]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from gradleak.cli import app as cli

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "bench" / "admm-compare"
DATASETS = [
    f"mnist={DATA / 'mnist'}",
    f"cifar100={DATA / 'cifar-100-python'}",
    f"folder={DATA / 'lfw'}",
]
ADMM_ONLY = ["--runs", "dlg-admm:fedadmm", "idlg-admm:fedadmm"]
STUDIES = {
    "main": [],
    "round2": [*ADMM_ONLY, "--rounds", "2", "--client-state-known"],
    "gradient": [*ADMM_ONLY, "--admm-reading", "gradient"],
}
COMMON = ["--local-lr", "0.01", "--admm-rho", "1.0", "--snapshots", "1,10,30,100,300"]
# The figures the results page shows: (study, figure) → admm-compare-[STUDY-]FIGURE.
FIGURES = (
    ("main", "grid-image0.png"),
    ("main", "curves-mnist.png"),
    ("main", "curves-cifar100.png"),
    ("main", "curves-lfw.png"),
    ("gradient", "curves-mnist.png"),
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", choices=list(STUDIES), action="append")
    parser.add_argument("--index", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=OUT, help=f"studies' folder ({OUT})")
    parser.add_argument(
        "--figures", type=Path, metavar="DIR", help="copy the main study's figures here"
    )
    args = parser.parse_args()
    for study in args.study or list(STUDIES):
        argv = ["compare", *(f"--dataset={d}" for d in DATASETS), *COMMON, *STUDIES[study]]
        argv += ["--index", *map(str, args.index), "--threads", str(args.threads)]
        argv += ["--out", str(args.out / study), "--no-progress"]
        print(f"== {study}: gradleak {' '.join(argv)}", flush=True)
        status = cli.main(argv)
        if status:
            return status
    if args.figures is not None:
        for study, name in FIGURES:
            source = args.out / study / name
            target = args.figures / f"admm-compare-{'' if study == 'main' else study + '-'}{name}"
            if source.is_file():
                shutil.copyfile(source, target)
                print(f"figure: {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
