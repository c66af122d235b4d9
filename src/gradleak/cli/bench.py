"""The `gradleak bench` command: a named study that reproduces a published setting."""

from __future__ import annotations

import argparse
from pathlib import Path

from gradleak.cli import flags
from gradleak.cli.execution import check_execution_flags, run_study
from gradleak.cli.exits import EXIT_OK

# The NAME that lists the studies instead of running one.
LIST = "list"


def add_bench(commands: flags.Commands) -> None:
    """Register `gradleak bench` on the subcommands of `gradleak`."""
    p = commands.add_parser(
        "bench",
        description="Run a named study (a packaged sweep spec) at a chosen budget; its "
        f"tables go to the output folder. 'gradleak bench {LIST}' names them.",
    )
    p.add_argument("name", metavar="NAME", help=f"a study name, or '{LIST}'")
    p.add_argument("--count", type=int, metavar="N", help="number of images (from the first)")
    flags.ITERATIONS.add(p, help="attack iterations per image")
    flags.DATA_ROOT.add(p)
    flags.OUT.add(p, help="output folder (default bench/NAME)")
    flags.add_execution_flags(p)
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """List the studies, or run one at the budget the flags choose.

    Args:
        args: the parsed flags of `gradleak bench`.

    Returns:
        0; 1 when some cells failed; 130 after Ctrl-C or SIGTERM (`main`: 143 for
        SIGTERM).

    Raises:
        GradleakError: an unknown study, a bad budget, missing data or bad execution flags.
    """
    from gradleak.studies.sweep.benches import BENCHES, load_bench

    if args.name == LIST:
        for name, (_, text) in BENCHES.items():
            print(f"  {name:30} {text}")
        return EXIT_OK
    check_execution_flags(args)  # cheap, before the study's cells are checked
    spec = load_bench(
        args.name, count=args.count, iterations=args.iterations, data_root=args.data_root
    )
    return run_study(spec, args.out or Path("bench") / args.name, args)
