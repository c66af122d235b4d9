"""The `gradleak train-prior` command: train a generative image prior for GGL and GIAS."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from gradleak.attacks.priors.generative import GENERATIVE_KINDS
from gradleak.cli import flags
from gradleak.cli.exits import EXIT_INTERRUPTED, EXIT_OK
from gradleak.cli.train import parse_range

if TYPE_CHECKING:
    from gradleak.training.generative import EpochLoss, PriorTrainResult


def add_train_prior(commands: flags.Commands) -> None:
    """Register `gradleak train-prior` on the subcommands of `gradleak`."""
    p = commands.add_parser(
        "train-prior",
        description="Train a small image generator on public images and save it at --out "
        "(PRIOR.pt), with 16 of its samples in PRIOR.samples.png; both are rewritten after "
        "every epoch. By default the indexed datasets train on images 100-599 (0-99 are the "
        "attacked ones by convention) and a folder on all its images. An existing --out is "
        "refused unless --overwrite. Ctrl-C (or SIGTERM) keeps the last completed epoch and "
        "exits with 130 (143).",
    )
    p.add_argument(
        "--kind",
        choices=tuple(GENERATIVE_KINDS),
        default="vae",
        help="how the generator is trained (default vae): "
        + "; ".join(f"{k}: {v}" for k, v in GENERATIVE_KINDS.items()),
    )
    flags.DATASET.add(p, required=True, help=None)
    flags.DATA_ROOT.add(p, required=True)
    flags.OUT.add(p, required=True, metavar="PRIOR", help="the prior file (.pt)")
    flags.OVERWRITE.add(p, help="replace an existing --out and its samples picture")
    p.add_argument(
        "--range",
        dest="index_range",
        type=parse_range,
        metavar="A-B",
        help="train on images A..B of the split, both included (default: 100-599 of "
        "cifar10, cifar100, mnist; all of a folder); keep the attacked images out of it",
    )
    flags.SPLIT.add(p, default="test", help="split (test)")
    flags.IMAGE_SIZE.add(p, help="side of folder images, a multiple of 4 (default 32)")
    p.add_argument(
        "--latent-dim", type=int, default=64, metavar="D", help="length of the latent code (64)"
    )
    p.add_argument(
        "--epochs",
        type=int,
        metavar="E",
        help="passes over the images (default: 800 steps' worth, e.g. 100 epochs of 500 "
        "images at batch 64)",
    )
    flags.BATCH_SIZE.add(p, default=64, help="images per step (64)")
    p.add_argument("--lr", type=float, help="Adam's step size (default: vae 1e-3, dcgan 2e-4)")
    p.add_argument(
        "--flip",
        dest="augment",
        action=argparse.BooleanOptionalAction,
        help="add mirrored images (default: yes for photos, no for mnist)",
    )
    flags.SEED.add(p, default=0, help="initialisation, batch order, flips and noise (0)")
    flags.THREADS.add(p)
    flags.DEVICE.add(p)
    flags.NO_PROGRESS.add(p)
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Train as the flags say; one summary line at the end.

    Args:
        args: the parsed flags of `gradleak train-prior`.

    Returns:
        0, or 130 after Ctrl-C (143 after SIGTERM, `cli/app.py`) once the last completed
        epoch is saved.

    Raises:
        GradleakError: bad settings, data, --out, --threads or --device.
    """
    from gradleak.training.generative import PriorTrainConfig, train_generative_prior

    flags.apply_threads(args.threads)
    device = flags.apply_device(args.device)
    config = PriorTrainConfig(
        kind=args.kind,
        dataset=args.dataset,
        data_root=args.data_root,
        split=args.split,
        index_range=args.index_range,
        image_size=args.image_size,
        latent_dim=args.latent_dim,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        augment=args.augment,
    )
    result = train_generative_prior(
        config, args.out, progress=not args.no_progress, overwrite=args.overwrite, device=device
    )
    if result.path is not None:
        print(_summary(result))
    if result.interrupted:
        where = (
            f"epoch {len(result.losses)} saved to {args.out}"
            if result.path
            else "no epoch completed"
        )
        print(f"interrupted: {where}", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK


def _summary(result: PriorTrainResult) -> str:
    prior = result.prior
    last: EpochLoss = result.losses[-1]
    epochs = f"{len(result.losses)} epoch{'' if len(result.losses) == 1 else 's'}"
    shape = "×".join(map(str, prior.data_shape))
    terms = ", ".join(f"{name} {value:.4g}" for name, value in last.terms.items())
    return (
        f"saved {result.path} ({prior.kind}, {result.images} images of {shape}, "
        f"{prior.dataset}): {epochs}, final loss {last.loss:.4g} ({terms}), "
        f"{result.seconds:.1f} s; samples in {result.samples_path}"
    )
