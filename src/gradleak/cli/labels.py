"""The `gradleak labels` command: score label strategies alone over many FedSGD batches."""

from __future__ import annotations

import argparse

from gradleak.cli import flags
from gradleak.cli.exits import EXIT_OK
from gradleak.cli.values import IntList
from gradleak.core.files import check_out_dir, output_dir

# The batch sizes studied, positive and in the order given.
parse_batch_sizes = IntList(
    noun="integers",
    example="1,8,32,64",
    invalid="{text} needs positive integers, e.g. {example}",
    minimum=1,
)
# The datasets whose test split the study draws batches from.
_DATASETS = ("cifar10", "cifar100", "mnist")


def _name_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def add_labels(commands: flags.Commands) -> None:
    """Register `gradleak labels` on the subcommands of `gradleak`."""
    from gradleak.studies.labels import DEFAULT_STRATEGIES

    p = commands.add_parser(
        "labels",
        description="Draw batches with repeated labels from a dataset's test split, compute "
        "the FedSGD gradient, recover the labels with each strategy and score them: "
        "exact match of the set of present classes, its precision and recall, and count "
        "accuracy (the fraction of samples whose label is accounted for). Writes "
        "OUT/labels.csv and OUT/labels.md; an OUT that holds files is refused unless "
        "--overwrite replaces it.",
    )
    flags.MODEL.add(p, required=True)
    flags.MODEL_ARG.add(p)
    flags.DATASET.add(p, required=True, choices=_DATASETS, help=None)
    flags.DATA_ROOT.add(p, required=True)
    p.add_argument(
        "--batch-sizes",
        type=parse_batch_sizes,
        default=(1, 8, 32, 64),
        metavar="B,B",
        help="(1,8,32,64)",
    )
    p.add_argument("--batches", type=int, default=20, metavar="N", help="batches per size (20)")
    p.add_argument(
        "--strategies",
        type=_name_list,
        default=DEFAULT_STRATEGIES,
        metavar="S,S",
        help=f"label strategies ({','.join(DEFAULT_STRATEGIES)})",
    )
    flags.CHECKPOINT.add(p, help="model state to load")
    flags.OUT.add(p, required=True, help="output folder")
    flags.OVERWRITE.add(p)
    flags.SEED.add(p, default=0, help="model init and batches (0)")
    flags.DEVICE.add(p)
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Evaluate the strategies, print the markdown table and where the files went.

    Args:
        args: the parsed flags of `gradleak labels`.

    Returns:
        0.

    Raises:
        GradleakError: an unknown strategy, bad batch sizes, missing data, a bad --device
            or an --out that cannot be written or holds files (without --overwrite), before
            any batch.
    """
    from gradleak.studies.labels import evaluate_label_recovery, label_table, write_label_results

    device = flags.apply_device(args.device)
    check_out_dir(args.out, overwrite=args.overwrite, what="output folder")
    rows = evaluate_label_recovery(
        args.model,
        args.dataset,
        args.data_root,
        batch_sizes=args.batch_sizes,
        batches=args.batches,
        strategies=args.strategies,
        checkpoint=args.checkpoint,
        seed=args.seed,
        model_args=args.model_args,
        device=device,
    )
    with output_dir(args.out, overwrite=args.overwrite) as folder:
        written = write_label_results(rows, folder)
    csv_path, md_path = (args.out / path.relative_to(folder) for path in written)
    print(label_table(rows), end="")
    print(f"results written to {csv_path} and {md_path}")
    return EXIT_OK
