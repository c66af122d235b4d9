"""The `gradleak train` command: train a model and save the states attacks can target."""

from __future__ import annotations

import argparse
import re
import sys
from typing import TYPE_CHECKING

from gradleak.cli import flags
from gradleak.cli.exits import EXIT_INTERRUPTED, EXIT_OK
from gradleak.cli.values import IntList

if TYPE_CHECKING:
    from gradleak.training.trainer import SavedCheckpoint

_RANGE = re.compile(r"\s*(\d+)\s*-\s*(\d+)\s*")


def parse_range(text: str) -> tuple[int, int]:
    """'100-599' → (100, 599), both ends included."""
    match = _RANGE.fullmatch(text)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a range A-B of image indices, e.g. 100-599"
        )
    first, last = int(match.group(1)), int(match.group(2))
    if first > last:
        raise argparse.ArgumentTypeError(
            f"range {text!r} ends before it starts; write it as A-B with A <= B"
        )
    return first, last


# The epochs whose states are saved, sorted and unique (0 is the untrained state); an epoch
# outside the training is refused by TrainConfig with the range it allows.
parse_epochs = IntList(
    noun="epochs",
    example="1,5",
    invalid="--save-epochs needs at least one epoch, e.g. {example}",
    sort_unique=True,
)


def add_train(commands: flags.Commands) -> None:
    """Register `gradleak train` on the subcommands of `gradleak`."""
    p = commands.add_parser(
        "train",
        description="Train a model with SGD on cross-entropy over a range of dataset images "
        "and save its state: the final one at --out (CKPT.pt), the states after the "
        "--save-epochs next to it (CKPT.epochN.pt; 0 is the untrained state) and the "
        "per-epoch loss and accuracy in CKPT.json. Files of an earlier training at CKPT are "
        "refused unless --overwrite replaces them. Ctrl-C (or SIGTERM) saves the last "
        "completed epoch and exits with 130 (143).",
    )
    flags.MODEL.add(p, required=True)
    flags.MODEL_ARG.add(p)
    flags.DATASET.add(p, required=True, help=None)
    flags.DATA_ROOT.add(p, required=True)
    flags.OUT.add(p, required=True, metavar="CKPT", help="final checkpoint (.pt)")
    flags.OVERWRITE.add(
        p,
        help="replace the files of an earlier training at CKPT (the new set replaces them "
        "once training ends; they stay if it fails first)",
    )
    p.add_argument("--epochs", type=int, default=1, metavar="E", help="passes over the images (1)")
    flags.SPLIT.add(p, default="test", help="split (test)")
    p.add_argument(
        "--train-range",
        type=parse_range,
        metavar="A-B",
        help="training images A..B of the split, both included (default: all of it); keep "
        "the images you attack out of it",
    )
    p.add_argument(
        "--test-range",
        type=parse_range,
        metavar="A-B",
        help="held-out images A..B scored after every epoch (default: none)",
    )
    flags.BATCH_SIZE.add(p, default=64, help="SGD batch size (64)")
    p.add_argument("--lr", type=float, default=0.1, help="SGD step size (0.1)")
    p.add_argument("--momentum", type=float, default=0.0, help="SGD momentum (0)")
    p.add_argument("--weight-decay", type=float, default=0.0, help="SGD weight decay (0)")
    p.add_argument(
        "--save-epochs",
        type=parse_epochs,
        default=(),
        metavar="N,M",
        help="also save the states after these epochs as CKPT.epochN.pt (0: untrained)",
    )
    flags.IMAGE_SIZE.add(p, help="side of folder images (default 32)")
    flags.SEED.add(p, default=0, help="model init and batch order (0)")
    flags.THREADS.add(p)
    flags.DEVICE.add(p)
    flags.NO_PROGRESS.add(p)
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Train as the flags say; one line per saved checkpoint.

    Args:
        args: the parsed flags of `gradleak train`.

    Returns:
        0, or 130 after Ctrl-C (143 after SIGTERM, `cli/app.py`) once the last completed
        epoch is saved.

    Raises:
        GradleakError: bad settings, data, --out, --threads or --device.
    """
    from tqdm.auto import tqdm  # heavy imports only when training

    from gradleak.training.trainer import TrainConfig, train_model

    flags.apply_threads(args.threads)
    device = flags.apply_device(args.device)
    config = TrainConfig(
        model=args.model,
        dataset=args.dataset,
        data_root=args.data_root,
        split=args.split,
        train_range=args.train_range,
        test_range=args.test_range,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        seed=args.seed,
        save_epochs=args.save_epochs,
        image_size=args.image_size,
        model_args=args.model_args or {},
    )

    def report(checkpoint: SavedCheckpoint) -> None:
        # Through tqdm, so the line is not broken by the progress bar on a terminal.
        tqdm.write(_summary(checkpoint), file=sys.stdout)

    result = train_model(
        config,
        args.out,
        progress=not args.no_progress,
        on_save=report,
        overwrite=args.overwrite,
        device=device,
    )
    print(f"history written to {result.history_path} ({result.seconds:.1f} s)")
    if result.interrupted:
        done = result.history[-1].epoch if result.history else 0
        where = f"epoch {done} saved to {args.out}" if result.final else "no epoch completed"
        print(f"interrupted: {where}", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK


def _summary(checkpoint: SavedCheckpoint) -> str:
    def fmt(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    state = "untrained" if checkpoint.epoch == 0 else f"epoch {checkpoint.epoch}"
    return (
        f"saved {checkpoint.path} ({state}): train accuracy "
        f"{fmt(checkpoint.train_accuracy)}, held-out accuracy "
        f"{fmt(checkpoint.heldout_accuracy)}"
    )
