"""The `gradleak sweep` command: every cell of a sweep spec, resumably."""

from __future__ import annotations

import argparse
from pathlib import Path

from gradleak.cli import flags
from gradleak.cli.execution import check_execution_flags, run_study


def add_sweep(commands: flags.Commands) -> None:
    """Register `gradleak sweep` on the subcommands of `gradleak`."""
    p = commands.add_parser(
        "sweep",
        description="Run every cell of a sweep spec (YAML) into its own run directory; "
        "finished cells are skipped on a re-run, failed ones run again. Every cell is checked "
        "before any runs. Writes results.csv, summary.csv and summary.md (and results.parquet "
        "with pyarrow). Exits 1 when some cells failed, 130 when interrupted.",
    )
    p.add_argument("spec", type=Path, metavar="SPEC.yaml")
    flags.OUT.add(p, help="sweep directory (default sweeps/NAME)")
    flags.add_execution_flags(p)
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Run the sweep spec's unfinished cells and print the summary table.

    Args:
        args: the parsed flags of `gradleak sweep`.

    Returns:
        0; 1 when some cells failed; 130 after Ctrl-C or SIGTERM (`main`: 143 for
        SIGTERM).

    Raises:
        GradleakError: a bad spec or execution flags.
    """
    from gradleak.studies.sweep.spec import read_spec

    check_execution_flags(args)  # cheap, before the spec's cells are checked
    spec = read_spec(args.spec)
    return run_study(spec, args.out or Path("sweeps") / spec.name, args)
