"""DLG, iDLG, DLG-ADMM and iDLG-ADMM on MNIST, CIFAR-100 and LFW, plus three FedADMM variants.

Each study is one `gradleak compare` call (LeNet, batch 1) into bench/admm-compare/<study>/:

  main         the four attacks, FedADMM in round 1 with one local step (η 0.01, ρ 1)
  round2       the -admm attacks on round 2's increment (the client keeps x and π)
  round2-lr1e-3  the same with η 0.001 (round 2 matches the gradient to first order in η)
  steps5       the -admm attacks with five local steps in round 1
  scale-2eta   the -admm attacks in round 1 when the attacker divides by 2η, not η
               (--guess-local-lr 0.02): round 1's increment is exactly −2η∇f

Finished runs are kept, so a re-run only does what is missing. Run from the repository root:
  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/admm_compare.py [--study main] [--index 0 1 2]
"""

from __future__ import annotations

import argparse
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
    "round2": [*ADMM_ONLY, "--rounds", "2"],
    "round2-lr1e-3": [*ADMM_ONLY, "--rounds", "2", "--local-lr", "0.001"],
    "steps5": [*ADMM_ONLY, "--local-steps", "5"],
    "scale-2eta": [*ADMM_ONLY, "--guess-local-lr", "0.02"],
}
# A study's own flags come after these; argparse keeps the last value given.
COMMON = ["--local-lr", "0.01", "--admm-rho", "1.0", "--snapshots", "1,10,30,100,300"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", choices=list(STUDIES), action="append")
    parser.add_argument("--index", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    status = 0
    for study in args.study or list(STUDIES):
        argv = ["compare", *(f"--dataset={d}" for d in DATASETS), *COMMON, *STUDIES[study]]
        argv += ["--index", *map(str, args.index), "--threads", str(args.threads)]
        argv += ["--out", str(OUT / study), "--no-progress"]
        print(f"== {study}: gradleak {' '.join(argv)}", flush=True)
        status = cli.main(argv)
        if status:
            return status
    return status


if __name__ == "__main__":
    sys.exit(main())
