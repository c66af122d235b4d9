"""The `gradleak labels` subcommand: score label strategies alone over many FedSGD batches."""

from __future__ import annotations

import argparse
from pathlib import Path

from gradleak.models import available_models


def _int_list(text: str) -> tuple[int, ...]:
    """'1,8,32' → (1, 8, 32), each a positive integer."""
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of integers, e.g. 1,8,32,64"
        ) from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r} needs positive integers, e.g. 1,8,32,64")
    return values


def _name_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def add_labels(commands: argparse._SubParsersAction) -> None:
    """Register `gradleak labels` on the command's subparsers."""
    from gradleak.studies.labels import DEFAULT_STRATEGIES

    p = commands.add_parser(
        "labels",
        help="score label-recovery strategies on many FedSGD batches (no image attack)",
        description="Draw batches with repeated labels from a dataset's test split, compute "
        "the FedSGD gradient, recover the labels with each strategy and score them: "
        "exact match of the set of present classes, its precision and recall, and count "
        "accuracy (the fraction of samples whose label is accounted for). Writes "
        "OUT/labels.csv and OUT/labels.md.",
    )
    p.add_argument(
        "--model", required=True, metavar="NAME", help=f"model: {', '.join(available_models())}"
    )
    p.add_argument("--dataset", required=True, choices=("cifar10", "cifar100", "mnist"))
    p.add_argument(
        "--data-root", required=True, type=Path, metavar="DIR", help="folder with the dataset files"
    )
    p.add_argument(
        "--batch-sizes", type=_int_list, default=(1, 8, 32, 64), metavar="B,B", help="(1,8,32,64)"
    )
    p.add_argument("--batches", type=int, default=20, metavar="N", help="batches per size (20)")
    p.add_argument(
        "--strategies",
        type=_name_list,
        default=DEFAULT_STRATEGIES,
        metavar="S,S",
        help=f"label strategies ({','.join(DEFAULT_STRATEGIES)})",
    )
    p.add_argument("--checkpoint", type=Path, metavar="CKPT", help="model state to load")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="model init and batches (0)")
    p.set_defaults(handler=run_labels)


def run_labels(args: argparse.Namespace) -> int:
    """Evaluate the strategies, print the markdown table and where the files went."""
    from gradleak.studies.labels import evaluate_label_recovery, label_table, write_label_results

    rows = evaluate_label_recovery(
        args.model,
        args.dataset,
        args.data_root,
        batch_sizes=args.batch_sizes,
        batches=args.batches,
        strategies=args.strategies,
        checkpoint=args.checkpoint,
        seed=args.seed,
    )
    csv_path, md_path = write_label_results(rows, args.out)
    print(label_table(rows), end="")
    print(f"results written to {csv_path} and {md_path}")
    return 0
