"""Wall time of one sweep with 1 and 2 local workers and on a local Ray instance.

Each variant runs `gradleak sweep` from scratch into its own folder; the table also says
whether every cell's PSNR equals the one-worker run's.

Example (2 CPU cores, about 8 minutes):
  python benchmarks/sweep_walltime.py --write-docs
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from perf_report import machine, markdown_table, write_section

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SPEC = ROOT / "benchmarks" / "sweeps" / "dlg-idlg-defenses.yaml"
VARIANTS = {
    "1 local worker": ["--workers", "1"],
    "2 local workers": ["--workers", "2"],
    "Ray, local instance, 2 CPUs": ["--backend", "ray", "--workers", "2"],
}


def _psnr(sweep_dir: Path) -> dict[str, str]:
    with (sweep_dir / "results.csv").open() as f:
        return {row["cell"]: row["psnr"] for row in csv.DictReader(f)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spec", type=Path, default=DEFAULT_SPEC)
    parser.add_argument("--write-docs", action="store_true", help="update docs/PERFORMANCE.md")
    args = parser.parse_args()
    gradleak = Path(sys.executable).with_name("gradleak")
    work = Path(tempfile.mkdtemp(prefix="gradleak-sweep-time-"))
    rows, reference = [], None
    try:
        for label, flags in VARIANTS.items():
            out = work / label.replace(" ", "-").replace(",", "")
            command = [str(gradleak), "sweep", str(args.spec), "--out", str(out), "--no-progress"]
            start = time.perf_counter()
            subprocess.run(command + flags, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
            seconds = time.perf_counter() - start
            psnr = _psnr(out)
            reference = reference or psnr
            same = "yes" if psnr == reference else "no"
            rows.append([label, len(psnr), f"{seconds:.0f}", f"{seconds / len(psnr):.2f}", same])
            print(rows[-1], flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    one = float(rows[0][2])
    for row in rows:
        row.insert(3, f"{one / float(row[2]):.2f}")
    header = ["backend", "cells", "wall s", "speed-up", "s per cell", "same PSNR per cell"]
    spec = args.spec.relative_to(ROOT) if args.spec.is_relative_to(ROOT) else args.spec
    body = (
        f"{markdown_table(header, rows)}\n\nSweep `{spec}` from scratch each time (wall time "
        f"of the whole command, process and Ray start-up included). Measured on {machine()}. "
        "Command: `python benchmarks/sweep_walltime.py`."
    )
    print(body)
    if args.write_docs:
        write_section("sweep_walltime", body)


if __name__ == "__main__":
    main()
