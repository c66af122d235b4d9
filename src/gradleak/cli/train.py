"""The `gradleak train` subcommand: train a model and save the states attacks can target."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from gradleak.core.errors import GradleakError
from gradleak.models import available_models
from gradleak.scenario.config import DATASET_CHOICES

if TYPE_CHECKING:
    from gradleak.training.trainer import SavedCheckpoint

EXIT_INTERRUPTED = 130
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


def parse_epochs(text: str) -> tuple[int, ...]:
    """'1,5' → (1, 5): the epochs whose states are saved (0 is the untrained state)."""
    try:
        epochs = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of epochs, e.g. 1,5"
        ) from None
    if not epochs:
        raise argparse.ArgumentTypeError("--save-epochs needs at least one epoch, e.g. 1,5")
    return tuple(epochs)


def add_train(commands: argparse._SubParsersAction) -> None:
    """Register `gradleak train` on the command's subparsers."""
    p = commands.add_parser(
        "train",
        help="train a model with SGD and save checkpoints for attacks (--checkpoint)",
        description="Train a model with SGD on cross-entropy over a range of dataset images "
        "and save its state: the final one at --out (CKPT.pt), the states after the "
        "--save-epochs next to it (CKPT.epochN.pt; 0 is the untrained state) and the "
        "per-epoch loss and accuracy in CKPT.json. Ctrl-C saves the last completed epoch "
        "and exits with 130.",
    )
    p.add_argument(
        "--model", required=True, metavar="NAME", help=f"model: {', '.join(available_models())}"
    )
    p.add_argument("--dataset", required=True, choices=DATASET_CHOICES)
    p.add_argument(
        "--data-root", required=True, type=Path, metavar="DIR", help="folder with the dataset files"
    )
    p.add_argument("--out", required=True, type=Path, metavar="CKPT", help="final checkpoint (.pt)")
    p.add_argument("--epochs", type=int, default=1, metavar="E", help="passes over the images (1)")
    p.add_argument("--split", choices=("test", "train"), default="test", help="split (test)")
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
    p.add_argument("--batch-size", type=int, default=64, metavar="B", help="SGD batch size (64)")
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
    p.add_argument("--image-size", type=int, metavar="N", help="side of folder images (default 32)")
    p.add_argument(
        "--seed", type=int, default=0, metavar="S", help="model init and batch order (0)"
    )
    p.add_argument("--threads", type=int, metavar="N", help="CPU threads for torch")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(handler=run_train)


def run_train(args: argparse.Namespace) -> int:
    """Train as the flags say; one line per saved checkpoint; 130 after Ctrl-C."""
    import torch  # heavy imports only when training
    from tqdm.auto import tqdm

    from gradleak.training.trainer import TrainConfig, train_model

    if args.threads is not None:
        if args.threads < 1:
            raise GradleakError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
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
    )

    def report(checkpoint: SavedCheckpoint) -> None:
        # Through tqdm, so the line is not broken by the progress bar on a terminal.
        tqdm.write(_summary(checkpoint), file=sys.stdout)

    result = train_model(config, args.out, progress=not args.no_progress, on_save=report)
    print(f"history written to {result.history_path} ({result.seconds:.1f} s)")
    if result.interrupted:
        done = result.history[-1].epoch if result.history else 0
        where = f"epoch {done} saved to {args.out}" if result.final else "no epoch completed"
        print(f"interrupted: {where}", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


def _summary(checkpoint: SavedCheckpoint) -> str:
    def fmt(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    state = "untrained" if checkpoint.epoch == 0 else f"epoch {checkpoint.epoch}"
    return (
        f"saved {checkpoint.path} ({state}): train accuracy "
        f"{fmt(checkpoint.train_accuracy)}, held-out accuracy "
        f"{fmt(checkpoint.heldout_accuracy)}"
    )
