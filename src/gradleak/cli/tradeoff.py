"""The `gradleak tradeoff` command: attacks against defense strengths, beside their cost."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gradleak.cli import flags
from gradleak.cli.execution import check_execution_flags, open_backend
from gradleak.cli.exits import EXIT_INTERRUPTED, EXIT_OK
from gradleak.core.files import check_out_dir, output_dir

# What run_sweep writes first into a sweep's folder: a folder holding it is resumed.
SWEEP_SPEC_FILE = "spec.yaml"


def _check_out(out: Path, overwrite: bool) -> Path:
    return check_out_dir(out, overwrite=overwrite, resumes=SWEEP_SPEC_FILE, what="study folder")


def add_tradeoff(commands: flags.Commands) -> None:
    """Register `gradleak tradeoff` on the subcommands of `gradleak`."""
    p = commands.add_parser(
        "tradeoff",
        description="Run a trade-off spec (a sweep spec with a 'utility' mapping): the "
        "attacks against every defense setting, and one training run per setting for its "
        "test accuracy. Writes tradeoff.csv, tradeoff.md and tradeoff.png. Finished cells "
        "and trainings are kept: the same command again runs only what is missing; a "
        "folder that holds anything but a sweep is refused unless --overwrite starts over. "
        "Ctrl-C (or SIGTERM) keeps what finished and exits with 130 (143).",
    )
    p.add_argument("spec", type=Path, metavar="SPEC.yaml")
    flags.OUT.add(p, help="output folder (default sweeps/NAME)")
    flags.OVERWRITE.add(
        p,
        help="start over: the new study replaces what --out holds (finished cells "
        "included) once it ends; without it a sweep's folder is resumed",
    )
    flags.add_execution_flags(p)
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Run the trade-off spec; print its table and where the plot went.

    Args:
        args: the parsed flags of `gradleak tradeoff`.

    Returns:
        0, or 130 after Ctrl-C (143 after SIGTERM, `cli/app.py`).

    Raises:
        GradleakError: a bad spec, missing training data, bad execution flags or --out.
    """
    from gradleak.studies.tradeoff import read_tradeoff, run_tradeoff

    check_execution_flags(args)  # cheap, before the spec's data is opened
    if args.out is not None:
        _check_out(args.out, args.overwrite)
    spec = read_tradeoff(args.spec)
    out = _check_out(args.out or Path("sweeps") / spec.sweep.name, args.overwrite)
    with (
        open_backend(args) as backend,
        output_dir(out, overwrite=args.overwrite, resumable=True) as folder,
    ):
        try:
            _, interrupted = run_tradeoff(
                spec,
                folder,
                backend=backend,
                progress=not args.no_progress,
                threads=args.threads,
                device=args.device,
                stack=not args.no_stack,
            )
        except KeyboardInterrupt:
            # During a utility training: the finished cells and trainings are kept (the
            # trainings' results are cached), and the next call resumes from them.
            interrupted = True
    if interrupted:
        again = " without --overwrite" if args.overwrite else ""
        print(f"interrupted: run the same command again{again} to finish", file=sys.stderr)
        return EXIT_INTERRUPTED
    print((out / "tradeoff.md").read_text(), end="")
    print(f"table and plot written to {out}/tradeoff.md, tradeoff.png")
    return EXIT_OK
