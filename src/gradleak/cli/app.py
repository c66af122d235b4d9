"""The `gradleak` command: the parser, assembled from one module per command, and `main`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from gradleak import __version__
from gradleak.cli.attack import add_attack
from gradleak.cli.audit import add_audit
from gradleak.cli.bench import add_bench
from gradleak.cli.compare import add_compare
from gradleak.cli.exits import EXIT_INTERRUPTED, EXIT_USAGE
from gradleak.cli.flags import Commands
from gradleak.cli.labels import add_labels
from gradleak.cli.listing import add_list
from gradleak.cli.report import add_report
from gradleak.cli.simulate import add_simulate
from gradleak.cli.sweep import add_sweep
from gradleak.cli.tradeoff import add_tradeoff
from gradleak.cli.train import add_train
from gradleak.cli.train_inverter import add_train_inverter
from gradleak.cli.train_prior import add_train_prior
from gradleak.core.errors import GradleakError
from gradleak.core.signals import interrupt_exit_code, terminate_as_interrupt

# Every command, in the order `gradleak --help` lists them: a new command is its module (an
# add_<command> that registers it with a handler) and one line here.
COMMANDS: tuple[Callable[[Commands], None], ...] = (
    add_attack,
    add_audit,
    add_sweep,
    add_report,
    add_bench,
    add_tradeoff,
    add_train,
    add_train_prior,
    add_train_inverter,
    add_compare,
    add_simulate,
    add_labels,
    add_list,
)


class Parser(argparse.ArgumentParser):
    """argparse, but errors are one line with the usage hint, exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The parser of `gradleak` and all its commands.

    Returns:
        The parser; each command's namespace carries its `handler`.
    """
    parser = Parser(
        prog="gradleak",
        description="Measure how much private data leaks from shared gradients: simulate a "
        "client's update, attack it, and score the reconstruction.",
    )
    parser.add_argument("--version", action="version", version=f"gradleak {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for add_command in COMMANDS:
        add_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `gradleak argv`.

    Args:
        argv: the arguments after the program name (default: the process's).

    Returns:
        The exit code: the command's own, 2 for bad input (one line on stderr, also from
        argparse, which exits with it); after an interrupt, 128 + the signal, as a shell
        reports a process that signal ended: 130 after Ctrl-C, 143 after SIGTERM (handled
        like Ctrl-C, `core/signals.py`: the work done so far is kept the same way).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        with terminate_as_interrupt() as interrupts:
            code = args.handler(args)
    except GradleakError as exc:
        print(f"gradleak: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as exc:
        print("gradleak: interrupted before any result was produced", file=sys.stderr)
        return interrupt_exit_code(exc)
    # A command that kept its work after an interrupt says so with EXIT_INTERRUPTED; the
    # signal that interrupted it decides the code.
    return interrupts.exit_code() if code == EXIT_INTERRUPTED else code


if __name__ == "__main__":
    sys.exit(main())
