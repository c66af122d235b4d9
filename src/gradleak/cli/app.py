"""The `gradleak` command: the parser, assembled from one module per command, and `main`."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gradleak import __version__
from gradleak.cli.exits import EXIT_INTERRUPTED, EXIT_USAGE
from gradleak.core.errors import GradleakError
from gradleak.core.signals import interrupt_exit_code, terminate_as_interrupt


@dataclass(frozen=True)
class Command:
    """One command as `gradleak --help` lists it, and where its flags are declared.

    Attributes:
        name: the command's spelling, e.g. 'train-prior'.
        adder: 'MODULE:FUNCTION', the function that registers the command (its flags and
            handler) on the subcommands of `gradleak`; imported only when the command runs
            or its help is asked for, since most command modules import torch.
        summary: the one line `gradleak --help` shows (the command's one home for it).
    """

    name: str
    adder: str
    summary: str


# Every command, in the order `gradleak --help` lists them: a new command is its module (an
# add_<command> that registers it with a handler, without a `help=`) and one line here.
COMMANDS: tuple[Command, ...] = (
    Command(
        "attack",
        "gradleak.cli.attack:add_attack",
        "attack one client update and score the reconstruction",
    ),
    Command(
        "audit",
        "gradleak.cli.audit:add_audit",
        "does my federated setup leak? every attack that applies, within a time budget",
    ),
    Command(
        "sweep",
        "gradleak.cli.sweep:add_sweep",
        "run attacks × models × defenses × protocols × images × seeds, resumably",
    ),
    Command(
        "report",
        "gradleak.cli.report:add_report",
        "write report.html for a run or a sweep directory",
    ),
    Command(
        "bench",
        "gradleak.cli.bench:add_bench",
        "run a named study that reproduces a published setting ('bench list')",
    ),
    Command(
        "tradeoff",
        "gradleak.cli.tradeoff:add_tradeoff",
        "attacks against defense strengths, beside the accuracy each defense costs",
    ),
    Command(
        "train",
        "gradleak.cli.train:add_train",
        "train a model with SGD and save checkpoints for attacks (--checkpoint)",
    ),
    Command(
        "train-prior",
        "gradleak.cli.train_prior:add_train_prior",
        "train a generative image prior (a VAE decoder or a DCGAN generator) for attacks with "
        "a learned prior",
    ),
    Command(
        "train-inverter",
        "gradleak.cli.train_inverter:add_train_inverter",
        "train a network that maps a client's update to its images (--attack learned:INV.pt)",
    ),
    Command(
        "compare",
        "gradleak.cli.compare:add_compare",
        "several attacks (default DLG, iDLG, DLG-ADMM, iDLG-ADMM) on the same images of "
        "several datasets: snapshot grids, convergence curves and tables",
    ),
    Command(
        "simulate",
        "gradleak.cli.simulate:add_simulate",
        "decentralised training on a peer graph; every peer attacks its neighbours",
    ),
    Command(
        "labels",
        "gradleak.cli.labels:add_labels",
        "score label-recovery strategies on many FedSGD batches (no image attack)",
    ),
    Command("list", "gradleak.cli.listing:add_list", "list attacks, models and datasets"),
)


class Parser(argparse.ArgumentParser):
    """argparse, but errors are one line with the usage hint, exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class LazyCommands(argparse._SubParsersAction):
    """The subcommands of `gradleak`, each declared in full only once it is chosen.

    `gradleak --help` needs only the names and summaries of `COMMANDS`; a command's module
    (and with it torch) is imported when argparse reaches the command's name, just before
    the command's own flags (or its --help) are parsed.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._waiting: dict[str, Command] = {}  # listed, flags not yet declared

    def list_command(self, command: Command) -> None:
        """List `command` under its summary; its module is imported by `load`."""
        super().add_parser(command.name, help=command.summary)
        self._waiting[command.name] = command

    def load(self, name: str) -> None:
        """Declare the flags of command `name` (imports its module); no-op once done."""
        command = self._waiting.get(name)
        if command is None:
            return
        module, function = command.adder.split(":")
        getattr(importlib.import_module(module), function)(self)
        if name in self._waiting:
            raise RuntimeError(f"{command.adder} did not register the command {name!r}")

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        """The parser of command `name`, replacing its listed placeholder.

        Raises:
            ValueError: `help` is given: a command's summary lives in `COMMANDS`.
        """
        if "help" in kwargs:
            raise ValueError(f"command {name!r}: its summary belongs in cli/app.py COMMANDS")
        if self._waiting.pop(name, None) is not None:
            del self._name_parser_map[name]  # the placeholder; the listed line stays
        return super().add_parser(name, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        self.load(values[0])
        super().__call__(parser, namespace, values, option_string)


def build_parser(*, full: bool = False) -> argparse.ArgumentParser:
    """The parser of `gradleak` and all its commands.

    Args:
        full: declare every command's flags now (imports every command module); by
            default a command's flags are declared when the parse reaches its name, so
            `gradleak --help` imports none of them.

    Returns:
        The parser; each command's namespace carries its `handler`.
    """
    parser = Parser(
        prog="gradleak",
        description="Measure how much private data leaks from shared gradients: simulate a "
        "client's update, attack it, and score the reconstruction.",
    )
    parser.add_argument("--version", action="version", version=f"gradleak {__version__}")
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", parser_class=Parser, action=LazyCommands
    )
    for command in COMMANDS:
        commands.list_command(command)
    if full:
        for command in COMMANDS:
            commands.load(command.name)
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
