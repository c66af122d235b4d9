"""Command-line options the benchmarks share: which model, dataset and images to use."""

from __future__ import annotations

import argparse
from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def add_selection_arguments(parser: argparse.ArgumentParser) -> None:
    """--model, --dataset, --data-root, --start, --count, --seed."""
    parser.add_argument("--model", default="lenet")
    parser.add_argument("--dataset", default="cifar100")
    parser.add_argument("--data-root", type=Path, default=SHARED_DATA)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
