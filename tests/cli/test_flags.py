"""The command line's shared pieces: the command list, --threads, integer lists, overrides."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from gradleak.cli import flags
from gradleak.cli.app import build_parser
from gradleak.cli.compare import parse_iterations
from gradleak.cli.labels import parse_batch_sizes
from gradleak.cli.overrides import given, run_overrides
from gradleak.cli.train import parse_epochs
from gradleak.core.errors import GradleakError

from .running import cli_exit, one_line_error

pytestmark = pytest.mark.usefixtures("one_thread")

# `gradleak --help` lists the commands in this order.
COMMANDS = [
    "attack",
    "audit",
    "sweep",
    "report",
    "bench",
    "tradeoff",
    "train",
    "train-prior",
    "train-inverter",
    "compare",
    "simulate",
    "labels",
    "list",
]
# The commands that take --threads, in the order of COMMANDS.
WITH_THREADS = [
    "attack",
    "audit",
    "sweep",
    "bench",
    "tradeoff",
    "train",
    "train-prior",
    "train-inverter",
    "compare",
    "simulate",
]
# The commands that take --device (every one that computes), in the order of COMMANDS.
WITH_DEVICE = [*WITH_THREADS, "labels"]

SPEC = """\
name: threads
attacks: [idlg]
images: [0]
options: {idlg: {iterations: 1}}
"""
TRADEOFF = SPEC + "utility: {dataset: cifar10, train_count: 2, test_count: 2, batch_size: 2}\n"


# --- the commands -----------------------------------------------------------------------------


def test_help_lists_the_commands_in_order(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_exit(["--help"]) == 0
    out = capsys.readouterr().out
    listed = out.split("COMMAND\n", 1)[1].split("\n\n", 1)[0].splitlines()
    # A command's name starts its line; wrapped help lines are indented further.
    names = [line.split()[0] for line in listed if not line[:5].isspace()]
    assert names == COMMANDS


def test_every_command_has_a_handler() -> None:
    parser = build_parser(full=True)
    (commands,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert list(commands.choices) == COMMANDS
    for name, command in commands.choices.items():
        assert callable(command.get_default("handler")), name


# --- --threads --------------------------------------------------------------------------------


def _threads_argv(name: str, tmp_path: Path) -> list[str]:
    """The least `gradleak NAME` needs to reach its --threads check, writing under tmp_path."""
    out = ["--out", str(tmp_path / "out")]
    spec = tmp_path / "spec.yaml"
    spec.write_text(TRADEOFF if name == "tradeoff" else SPEC)
    data = ["--dataset", "cifar10", "--data-root", str(tmp_path)]
    return {
        "attack": ["attack", *out],
        "audit": ["audit", "--model", "lenet", "--data", "cifar10", *out],
        "sweep": ["sweep", str(spec), *out],
        "bench": ["bench", "dlg-lenet-cifar100", "--data-root", str(tmp_path), *out],
        "tradeoff": ["tradeoff", str(spec), *out],
        "train": ["train", "--model", "lenet", *data, "--out", str(tmp_path / "out" / "m.pt")],
        "train-prior": ["train-prior", *data, "--out", str(tmp_path / "out" / "prior.pt")],
        "train-inverter": [
            "train-inverter",
            "--model",
            "lenet",
            *data,
            "--out",
            str(tmp_path / "out" / "inv.pt"),
        ],
        "compare": ["compare", "--dataset", "cifar10", *out],
        "simulate": ["simulate", *out],
    }[name]


@pytest.mark.parametrize("name", WITH_THREADS)
@pytest.mark.parametrize("threads", ["0", "-2"])
def test_threads_below_one_is_one_line_and_exit_code_2(
    name: str, threads: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = _threads_argv(name, tmp_path)
    assert cli_exit([*argv, "--threads", threads]) == 2
    line = one_line_error(capsys)
    assert f"--threads must be at least 1, got {threads}" in line
    assert not (tmp_path / "out").exists()


def test_every_command_with_threads_is_checked() -> None:
    parser = build_parser(full=True)
    (commands,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    with_threads = [
        name
        for name, command in commands.choices.items()
        if any("--threads" in action.option_strings for action in command._actions)
    ]
    assert with_threads == WITH_THREADS


# --- --device ---------------------------------------------------------------------------------


def _device_argv(name: str, tmp_path: Path) -> list[str]:
    """The least `gradleak NAME` needs to reach its --device check, writing under tmp_path."""
    out = ["--out", str(tmp_path / "out")]
    if name == "labels":
        data = ["--dataset", "cifar10", "--data-root", str(tmp_path)]
        return ["labels", "--model", "lenet", *data, *out]
    if name == "audit":
        return ["audit", "--model", "lenet", "--data", "cifar10", *out]
    return _threads_argv(name, tmp_path)


def _missing(device: str) -> bool:
    """Whether this machine's torch lacks the device `device` names."""
    kind = device.split(":")[0]
    if kind == "cuda":
        return not torch.cuda.is_available()
    return kind == "mps" and not torch.backends.mps.is_available()


# Each spelling with what its one line says; the absent devices where this torch lacks them.
UNUSABLE_DEVICES = [
    ("bogus", "--device 'bogus' is not a device; use auto, cpu, cuda, cuda:N or mps"),
    ("cpu:1", "--device cpu:1: cpu takes no index; use --device cpu"),
    ("cuda", "--device cuda: this torch has no CUDA (torch.cuda.is_available() is False)"),
    ("cuda:1", "--device cuda:1: this torch has no CUDA"),
    ("mps", "--device mps: this torch has no MPS (torch.backends.mps.is_available() is False)"),
]


@pytest.mark.parametrize("name", WITH_DEVICE)
@pytest.mark.parametrize(("device", "message"), UNUSABLE_DEVICES)
def test_an_unusable_device_is_one_line_and_exit_code_2(
    name: str, device: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if device in ("cuda", "cuda:1", "mps") and not _missing(device):
        pytest.skip(f"this machine has {device}")
    assert cli_exit([*_device_argv(name, tmp_path), "--device", device]) == 2
    assert message in one_line_error(capsys)
    assert not (tmp_path / "out").exists()


def test_every_command_with_device_is_checked() -> None:
    parser = build_parser(full=True)
    (commands,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    with_device = [
        name
        for name, command in commands.choices.items()
        if any("--device" in action.option_strings for action in command._actions)
    ]
    assert with_device == [name for name in COMMANDS if name in WITH_DEVICE]


def test_apply_device_resolves_auto_to_a_device_this_machine_has() -> None:
    assert flags.apply_device(None) == flags.apply_device("auto")
    expected = "cuda" if torch.cuda.is_available() else "mps" if not _missing("mps") else "cpu"
    assert flags.apply_device(None).type == expected
    assert flags.apply_device("cpu") == torch.device("cpu")
    # Sweep cells resolve the device where they run: Ray workers' is only spelled here.
    flags.check_device_flag("cuda:3", here=False)
    with pytest.raises(GradleakError, match="'gpu' is not a device"):
        flags.check_device_flag("gpu", here=False)


def test_apply_threads_sets_torch_threads_only_in_this_process() -> None:
    before = torch.get_num_threads()
    try:
        flags.apply_threads(None)
        assert torch.get_num_threads() == before
        flags.apply_threads(before + 1, in_this_process=False)
        assert torch.get_num_threads() == before
        flags.apply_threads(before + 1)
        assert torch.get_num_threads() == before + 1
        with pytest.raises(GradleakError, match="--threads must be at least 1, got 0"):
            flags.apply_threads(0, in_this_process=False)
    finally:
        torch.set_num_threads(before)


# --- comma-separated integer lists ------------------------------------------------------------


@pytest.mark.parametrize(
    ("parse", "text", "values"),
    [
        (parse_iterations, "30, 1,10,10", (1, 10, 30)),
        (parse_iterations, "0", (0,)),
        (parse_epochs, "5,1,1", (1, 5)),
        (parse_epochs, "0", (0,)),
        (parse_batch_sizes, "32,1,8,8", (32, 1, 8, 8)),
    ],
)
def test_integer_lists_parse(
    parse: Callable[[str], tuple[int, ...]], text: str, values: tuple[int, ...]
) -> None:
    assert parse(text) == values


@pytest.mark.parametrize(
    ("parse", "text", "message"),
    [
        (
            parse_iterations,
            "1,x",
            "'1,x' is not a comma-separated list of iterations, e.g. 1,10,30,100,300",
        ),
        (parse_iterations, "-1", "'-1': give non-negative iterations, e.g. 1,10,30,100,300"),
        (parse_iterations, "", "'': give non-negative iterations, e.g. 1,10,30,100,300"),
        (parse_epochs, "1,x", "'1,x' is not a comma-separated list of epochs, e.g. 1,5"),
        (parse_epochs, ",", "--save-epochs needs at least one epoch, e.g. 1,5"),
        (
            parse_batch_sizes,
            "8,y",
            "'8,y' is not a comma-separated list of integers, e.g. 1,8,32,64",
        ),
        (parse_batch_sizes, "8,0", "'8,0' needs positive integers, e.g. 1,8,32,64"),
        (parse_batch_sizes, "", "'' needs positive integers, e.g. 1,8,32,64"),
    ],
)
def test_integer_list_errors(
    parse: Callable[[str], tuple[int, ...]], text: str, message: str
) -> None:
    with pytest.raises(argparse.ArgumentTypeError) as info:
        parse(text)
    assert str(info.value) == message


def test_negative_save_epochs_are_left_to_the_trainer() -> None:
    # The trainer names the range of epochs it allows; the list only orders them.
    assert parse_epochs("-1,2") == (-1, 2)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["compare", "--dataset", "cifar10", "--snapshots", "1,x"],
            "argument --snapshots: '1,x' is not a comma-separated list of iterations",
        ),
        (
            ["labels", "--model", "lenet", "--dataset", "mnist", "--data-root", "d"]
            + ["--out", "o", "--batch-sizes", "0"],
            "argument --batch-sizes: '0' needs positive integers, e.g. 1,8,32,64",
        ),
        (
            ["train", "--model", "lenet", "--dataset", "mnist", "--data-root", "d"]
            + ["--out", "o.pt", "--save-epochs", "x"],
            "argument --save-epochs: 'x' is not a comma-separated list of epochs, e.g. 1,5",
        ),
    ],
)
def test_integer_list_errors_are_one_usage_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_exit(argv) == 2
    assert message in one_line_error(capsys)


# --- flags → run settings ---------------------------------------------------------------------


def test_run_overrides_collect_the_given_flags() -> None:
    args = argparse.Namespace(
        model="convnet", seed=None, rounds=3, iterations=5, lr=None, no_progress=True, peers=4
    )
    assert run_overrides(args) == {
        "model": "convnet",
        "rounds": 3,
        "attack_options": {"iterations": 5},
        "progress": False,
    }
    assert run_overrides(args, skip=("rounds",)) == {
        "model": "convnet",
        "attack_options": {"iterations": 5},
        "progress": False,
    }
    quiet = argparse.Namespace(model=None, no_progress=False)
    assert run_overrides(quiet) == {"attack_options": {}}


def test_given_keeps_the_order_asked_for() -> None:
    args = argparse.Namespace(b=2, a=1, c=None)
    assert list(given(args, ["a", "b", "c", "absent"]).items()) == [("a", 1), ("b", 2)]


def test_shared_flags_refuse_an_unknown_spelling() -> None:
    parser = argparse.ArgumentParser()
    with pytest.raises(ValueError, match="--local-rate"):
        flags.add_protocol_flags(parser, only=("--local-rate",))
    with pytest.raises(ValueError, match="--guess-lr"):
        flags.add_guess_flags(parser, helps={"--guess-lr": "typo"})


def test_protocol_flags_take_the_choices_a_command_offers() -> None:
    parser = argparse.ArgumentParser(exit_on_error=False)
    flags.add_protocol_flags(parser, only=("--protocol", "--local-lr"), protocols=("fedsgd",))
    assert parser.parse_args(["--protocol", "fedsgd", "--local-lr", "0.1"]) == argparse.Namespace(
        protocol="fedsgd", local_lr=0.1
    )
    with pytest.raises(argparse.ArgumentError, match="invalid choice"):
        parser.parse_args(["--protocol", "fedavg"])
    with pytest.raises(SystemExit):  # not offered: unrecognized
        parser.parse_args(["--rounds", "2"])
