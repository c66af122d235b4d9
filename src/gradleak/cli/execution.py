"""What the execution flags mean: the backend that runs sweep cells, and a study run on it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from gradleak.cli.exits import EXIT_CELLS_FAILED, EXIT_INTERRUPTED, EXIT_OK
from gradleak.cli.flags import apply_threads, check_device_flag
from gradleak.core.errors import GradleakError

if TYPE_CHECKING:
    from gradleak.studies.sweep.backends import LocalBackend, RayBackend
    from gradleak.studies.sweep.spec import SweepSpec


def check_execution_flags(args: argparse.Namespace) -> None:
    """Refuse bad execution flags in one line, before a spec's cells are checked.

    Args:
        args: parsed flags declared by `flags.add_execution_flags`.

    Raises:
        GradleakError: bad --threads, --workers or --device (a local device this machine
            lacks included), or --address without --backend ray.
    """
    from gradleak.studies.sweep.backends import check_workers

    # Each cell sets its own threads; here only the value is checked.
    apply_threads(args.threads, in_this_process=False)
    # Local cells compute on this machine's devices; Ray workers resolve theirs.
    check_device_flag(args.device, here=args.backend != "ray")
    if args.workers is not None:
        check_workers(args.workers, local=args.backend != "ray")
    if args.backend != "ray" and args.address is not None:
        raise GradleakError("--address is for --backend ray; add --backend ray or drop it")


def open_backend(args: argparse.Namespace) -> LocalBackend | RayBackend:
    """The backend --backend, --workers and --address choose, to use in a `with` block.

    Args:
        args: parsed flags declared by `flags.add_execution_flags`.

    Returns:
        Local worker processes, or Ray tasks.

    Raises:
        GradleakError: bad --threads or --workers, --address without --backend ray, or a Ray
            cluster that cannot be reached.
    """
    from gradleak.studies.sweep.backends import LocalBackend, RayBackend

    check_execution_flags(args)
    if args.backend == "ray":
        return RayBackend(args.address, workers=args.workers)
    return LocalBackend(args.workers)


def run_study(spec: SweepSpec, out: Path, args: argparse.Namespace) -> int:
    """Run a sweep spec's cells not yet finished under `out`; print the summary table.

    Args:
        spec: the sweep.
        out: the sweep directory.
        args: parsed execution flags.

    Returns:
        The exit code: 0; 1 when some cells failed (their reasons in summary.md; a re-run
        runs them again); 130 after Ctrl-C or SIGTERM (with how to finish on stderr; `main`
        reports 143 for SIGTERM).

    Raises:
        GradleakError: bad execution flags, a sweep folder another sweep is writing, or a
            sweep that cannot run.
    """
    from gradleak.studies.sweep.runner import run_sweep

    with open_backend(args) as backend:
        result = run_sweep(
            spec,
            out,
            backend=backend,
            progress=not args.no_progress,
            threads=args.threads,
            device=args.device,
            stack=not args.no_stack,
        )
    if result.removed_partial:
        print(
            f"removed {result.removed_partial} half-written cell director(ies) left by an "
            "earlier run; their cells run again"
        )
    failed = f", {result.failed} failed" if result.failed else ""
    print(
        f"{result.cells} cells: {result.ran} run now, {result.skipped} already done{failed}; "
        f"tables in {out}/summary.md, results.csv"
    )
    if result.not_scored:
        print(
            f"{result.not_scored} cell(s) diverged or made no progress: counted apart, not "
            "averaged (status in results.csv)"
        )
    print((out / "summary.md").read_text(encoding="utf-8"), end="")
    if result.interrupted:
        print(
            f"interrupted: {result.done} of {result.cells} cells done; run the same command "
            "again to finish",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    if result.failed:
        print(
            f"{result.failed} of {result.cells} cells failed (reasons in {out}/summary.md); "
            "run the same command again to retry them",
            file=sys.stderr,
        )
        return EXIT_CELLS_FAILED
    return EXIT_OK
