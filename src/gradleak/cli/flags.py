"""Flags several commands share, declared once so their spelling and help agree."""

from __future__ import annotations

import argparse
from pathlib import Path

from gradleak.attacks.labels import AUTO, LABEL_STRATEGIES
from gradleak.models import available_models
from gradleak.scenario.config import DATASET_CHOICES

LABEL_STRATEGY_CHOICES = (AUTO, *LABEL_STRATEGIES)

# argparse groups and parsers both have add_argument.
Flags = argparse.ArgumentParser | argparse._ArgumentGroup


def add_model_and_data_flags(p: Flags) -> None:
    """--model, --dataset, --data-root, --split."""
    p.add_argument(
        "--model", metavar="NAME", help=f"model: {', '.join(available_models())} (default lenet)"
    )
    p.add_argument("--dataset", choices=DATASET_CHOICES, help="dataset (default cifar10)")
    p.add_argument(
        "--data-root",
        type=Path,
        metavar="DIR",
        help="folder with the dataset files (default for cifar10: bundled sample images)",
    )
    p.add_argument("--split", choices=("test", "train"), help="dataset split (default test)")


def add_attack_tuning_flags(p: Flags) -> None:
    """--iterations, --restarts, --lr, --tv, --label-strategy: the attack's hyper-parameters."""
    p.add_argument("--iterations", type=int, metavar="N", help="optimisation steps")
    p.add_argument("--restarts", type=int, metavar="K", help="independent trials; best is kept")
    p.add_argument("--lr", type=float, help="step size of the attack's optimiser")
    p.add_argument("--tv", type=float, dest="tv_weight", help="total-variation weight")
    p.add_argument(
        "--label-strategy",
        choices=LABEL_STRATEGY_CHOICES,
        help="where the attack gets labels (auto: known if granted, else iDLG for batch 1, "
        "else optimised; sign, yin, count: read from the last layer for batches)",
    )
