"""The `gradleak tradeoff` command: attacks against defense strengths, beside their cost."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gradleak.cli import flags
from gradleak.cli.execution import open_backend
from gradleak.cli.exits import EXIT_INTERRUPTED, EXIT_OK


def add_tradeoff(commands: flags.Commands) -> None:
    """Register `gradleak tradeoff` on the subcommands of `gradleak`."""
    p = commands.add_parser(
        "tradeoff",
        help="attacks against defense strengths, beside the accuracy each defense costs",
        description="Run a trade-off spec (a sweep spec with a 'utility' mapping): the "
        "attacks against every defense setting, and one training run per setting for its "
        "test accuracy. Writes tradeoff.csv, tradeoff.md and tradeoff.png.",
    )
    p.add_argument("spec", type=Path, metavar="SPEC.yaml")
    flags.OUT.add(p, help="output folder (default sweeps/NAME)")
    flags.add_execution_flags(p)
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Run the trade-off spec; print its table and where the plot went.

    Args:
        args: the parsed flags of `gradleak tradeoff`.

    Returns:
        0, or 130 after Ctrl-C.

    Raises:
        GradleakError: a bad spec, missing training data or bad execution flags.
    """
    from gradleak.studies.tradeoff import read_tradeoff, run_tradeoff

    spec = read_tradeoff(args.spec)
    out = args.out or Path("sweeps") / spec.sweep.name
    with open_backend(args) as backend:
        _, interrupted = run_tradeoff(
            spec, out, backend=backend, progress=not args.no_progress, threads=args.threads
        )
    if interrupted:
        print("interrupted: run the same command again to finish", file=sys.stderr)
        return EXIT_INTERRUPTED
    print((out / "tradeoff.md").read_text(), end="")
    print(f"table and plot written to {out}/tradeoff.md, tradeoff.png")
    return EXIT_OK
