"""The `gradleak report` command: report.html for a run or a sweep directory."""

from __future__ import annotations

import argparse
from pathlib import Path

from gradleak.cli import flags
from gradleak.cli.exits import EXIT_OK
from gradleak.core.files import check_writable


def add_report(commands: flags.Commands) -> None:
    """Register `gradleak report` on the subcommands of `gradleak`."""
    p = commands.add_parser(
        "report",
        description="Write a self-contained report.html: for a run, the reconstruction, "
        "snapshots over iterations, curves, metrics, threat model and configuration; for a "
        "sweep, the summary tables, a plot per swept axis and the best and worst cells.",
    )
    p.add_argument("path", type=Path, metavar="DIR")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Write the report and say where.

    Args:
        args: the parsed flags of `gradleak report`.

    Returns:
        0.

    Raises:
        GradleakError: the directory is not a run or a sweep, or cannot be written.
    """
    from gradleak.report.html import write_report

    if args.path.is_dir():  # report.html goes into it: refuse one that cannot take it first
        check_writable(args.path, what="directory", fix="make it writable or report a copy")

    path = write_report(args.path)
    print(f"report written to {path}")
    return EXIT_OK
