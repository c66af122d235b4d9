"""The `gradleak train-inverter` command: train a learned inverter for one server model."""

from __future__ import annotations

import argparse
import sys

from gradleak.cli import flags
from gradleak.cli.exits import EXIT_INTERRUPTED, EXIT_OK
from gradleak.cli.train import parse_range
from gradleak.data.loading import FILE_DATASETS
from gradleak.scenario.config import DATASET_CHOICES
from gradleak.training.auxiliary import AUXILIARY_RANGE
from gradleak.training.inverter import (
    INVERTER_PROTOCOLS,
    InverterTrainConfig,
    InverterTrainResult,
)

_DEFAULTS = InverterTrainConfig(model="")
_PROTOCOL_FLAGS = (
    "--protocol",
    "--local-steps",
    "--local-epochs",
    "--local-batch-size",
    "--local-lr",
)


def add_train_inverter(commands: flags.Commands) -> None:
    """Register `gradleak train-inverter` on the subcommands of `gradleak`."""
    d = _DEFAULTS
    p = commands.add_parser(
        "train-inverter",
        description="Compute the updates that batches of auxiliary images produce at one "
        "server model (as the protocol's clients compute them), sketch each update with a "
        "fixed count sketch, and train a network from the sketch back to the images "
        "('Learning to Invert', Wu et al. 2023). The inverter serves only the server model "
        "state, batch size, image shape and protocol it was trained for; attack with "
        "gradleak attack --attack learned:INV.pt. It is saved after every epoch; Ctrl-C "
        "(or SIGTERM) keeps the last completed epoch and exits with 130 (143).",
    )
    flags.MODEL.add(p, required=True, help=f"{flags.MODEL.help} (the server's model)")
    flags.MODEL_ARG.add(p)
    flags.CHECKPOINT.add(
        p, help="the server model's state (default: the untrained model of --seed)"
    )
    flags.DATASET.add(p, default=d.dataset, help=f"auxiliary images' dataset ({d.dataset})")
    flags.DATA_ROOT.add(p, required=True)
    flags.SPLIT.add(p, default=d.split, help=f"split ({d.split})")
    p.add_argument(
        "--range",
        dest="image_range",
        type=parse_range,
        metavar="A-B",
        help="auxiliary images A..B of the split, both included (default "
        f"{AUXILIARY_RANGE[0]}-{AUXILIARY_RANGE[1]}: images 0-{AUXILIARY_RANGE[0] - 1} are where "
        "attacks are evaluated; a folder: all of it)",
    )
    flags.IMAGE_SIZE.add(p, help="side of folder images (default 32)")
    p.add_argument(
        "--victim-dataset",
        choices=[d for d in DATASET_CHOICES if d not in FILE_DATASETS],
        help="the dataset the server model serves (its classes and normalisation), when the "
        "auxiliary images come from elsewhere, e.g. LFW faces for a CIFAR-10 model "
        "(default: --dataset)",
    )
    flags.BATCH_SIZE.add(p, default=d.batch_size, help=f"the client's batch size ({d.batch_size})")
    flags.add_protocol_flags(
        p.add_argument_group("protocol", "what the clients share (as gradleak attack takes it)"),
        only=_PROTOCOL_FLAGS,
        protocols=INVERTER_PROTOCOLS,
    )
    flags.MODEL_MODE.add(p, default=d.model_mode, help=f"client's batch-norm mode ({d.model_mode})")
    p.add_argument(
        "--updates",
        type=int,
        default=d.updates,
        metavar="N",
        help=f"training pairs generated once and reused every epoch ({d.updates})",
    )
    p.add_argument("--epochs", type=int, default=d.epochs, metavar="E", help=f"epochs ({d.epochs})")
    p.add_argument(
        "--sketch-dim",
        type=int,
        default=d.sketch_dim,
        metavar="D",
        help=f"buckets of the update's count sketch ({d.sketch_dim})",
    )
    p.add_argument(
        "--hidden", type=int, default=d.hidden, metavar="W", help=f"hidden width ({d.hidden})"
    )
    p.add_argument(
        "--dropout",
        type=float,
        default=d.dropout,
        metavar="P",
        help=f"input dropout while training ({d.dropout})",
    )
    p.add_argument("--lr", type=float, default=d.lr, help=f"Adam's step size ({d.lr:g})")
    p.add_argument(
        "--no-augment",
        dest="augment",
        action="store_false",
        help="no random flips and crops of the auxiliary images",
    )
    flags.SEED.add(
        p,
        default=d.seed,
        help=f"server model init (without --checkpoint; attack with the same --seed), "
        f"sketch and training ({d.seed})",
    )
    flags.OUT.add(p, required=True, metavar="INV", help="the inverter file (.pt)")
    flags.OVERWRITE.add(p, help="replace an existing inverter file at --out")
    flags.THREADS.add(p)
    flags.DEVICE.add(p)
    flags.NO_PROGRESS.add(p)
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Train as the flags say; one summary line.

    Args:
        args: the parsed flags of `gradleak train-inverter`.

    Returns:
        0, or 130 after Ctrl-C (143 after SIGTERM, `cli/app.py`), the last completed epoch
        kept at --out.

    Raises:
        GradleakError: bad settings, data, --out, --threads or --device (before any work).
    """
    from gradleak.training.inverter import train_inverter

    flags.apply_threads(args.threads)
    device = flags.apply_device(args.device)
    config = InverterTrainConfig(
        model=args.model,
        model_args=args.model_args or {},
        dataset=args.dataset,
        data_root=args.data_root,
        checkpoint=args.checkpoint,
        split=args.split,
        range=args.image_range,
        image_size=args.image_size,
        batch_size=args.batch_size,
        protocol=args.protocol or _DEFAULTS.protocol,
        local_steps=args.local_steps,
        local_epochs=args.local_epochs,
        local_batch_size=args.local_batch_size,
        local_lr=args.local_lr,
        model_mode=args.model_mode,
        victim_dataset=args.victim_dataset,
        sketch_dim=args.sketch_dim,
        hidden=args.hidden,
        dropout=args.dropout,
        augment=args.augment,
        updates=args.updates,
        epochs=args.epochs,
        lr=args.lr,
        seed=args.seed,
    )
    result = train_inverter(
        config, args.out, progress=not args.no_progress, overwrite=args.overwrite, device=device
    )
    if result.interrupted:
        where = (
            f"epoch {len(result.losses)} kept at {args.out}"
            if result.losses
            else "no epoch completed, nothing written"
        )
        print(f"interrupted: {where}", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(_summary(result))
    return EXIT_OK


def _summary(result: InverterTrainResult) -> str:
    inverter = result.inverter
    assert inverter is not None  # a training that was not interrupted completed its epochs
    first = "n/a" if result.first_loss is None else f"{result.first_loss:.4f}"
    return (
        f"saved {result.path}: inverter for {inverter.describe()}; {result.updates} updates "
        f"in {result.generation_seconds:.1f} s, {len(result.losses)} epochs, loss {first} → "
        f"{result.losses[-1]:.4f}, {result.seconds:.1f} s in all"
    )
