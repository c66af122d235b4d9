"""`gradleak attack --update FILE`: the flags of a run against a captured update.

The flags (and --config) describe the run as for a simulated one: the model, the data's
format, the protocol, the threat model and the attack. What only a simulation has (which
images, defenses applied by the clients, several users, later rounds, a budget timed on a
simulated update, a PSNR target) is refused in one line naming the flag.
"""

from __future__ import annotations

import argparse
from typing import Any

from gradleak.cli.overrides import run_overrides
from gradleak.core.errors import GradleakError
from gradleak.core.settings import read_mapping
from gradleak.fl.protocols import get_protocol
from gradleak.scenario.captured_run import CapturedFiles, CapturedRequest
from gradleak.scenario.config import DEFAULT_PROTOCOL, RunConfig, load_run_config

# Settings of a simulated run that an update file cannot take, by RunConfig name: the flag
# that gives each and why it does not apply.
NOT_FOR_CAPTURED = {
    "indices": ("--index", "the update's images are the client's, not picked from a dataset"),
    "image": ("--image", "the update's images are the client's; score them with --truth"),
    "label": ("--label", "the update's labels are the client's; score them with --truth"),
    "data_root": ("--data-root", "an update file is attacked without the clients' data"),
    "split": ("--split", "an update file is attacked without the clients' data"),
    "defenses": ("--defense", "the client applied its defenses before the update was captured"),
    "users": ("--users", "a captured update is attacked as one client's"),
    "rounds": ("--rounds", "the model the update answers is --checkpoint or --update-base"),
    "share_buffers": ("--share-buffers", "the file holds the buffers the client shared"),
    "client_state_known": (
        "--client-state-known",
        "a captured FedADMM update is attacked without the client's earlier state",
    ),
    "stop_psnr": ("--stop-psnr", "it is not supported with a captured update"),
    "budget": ("--budget", "it is not supported with a captured update"),
    "snapshots": ("snapshots", "a captured run keeps no snapshots"),
    "modality": ("--modality", "captured updates are attacked as images"),
    "texts": ("--text", "captured updates are attacked as images"),
    "text_file": ("--text-file", "captured updates are attacked as images"),
    "task": ("--task", "captured updates are attacked as images"),
    "lengths_known": ("--lengths-known", "captured updates are attacked as images"),
    "malicious_server": (
        "--malicious-server",
        "a captured update answers the model the client received; a malicious server's "
        "changes belong in a simulated run",
    ),
}
# The flags of `gradleak attack` that only mean something with --update.
UPDATE_ONLY = {"update_base": "--update-base", "update_kind": "--update-kind", "truth": "--truth"}


def refuse_update_only(args: argparse.Namespace) -> None:
    """Refuse --update-base, --update-kind and --truth without --update.

    Raises:
        GradleakError: one of them is given and --update is not.
    """
    given = [flag for name, flag in UPDATE_ONLY.items() if getattr(args, name) is not None]
    if given:
        raise GradleakError(f"{given[0]} goes with --update FILE (a captured update); add it")


def captured_request(args: argparse.Namespace) -> CapturedRequest:
    """The run `gradleak attack --update FILE ...` describes.

    Args:
        args: the parsed flags of `gradleak attack`, --update among them.

    Returns:
        The validated settings, the files, the batch size asked for and, with --protocol
        fedsgd, the client's learning rate that reads a weight difference as a gradient.

    Raises:
        GradleakError: a flag or config key that does not apply to a captured update, or
            settings that cannot run (one line each).
    """
    from_file = read_mapping(args.config) if args.config is not None else {}
    overrides = run_overrides(args)
    if args.budget is not None:
        overrides["budget"] = args.budget
    _refuse(overrides, from_file)
    protocol = overrides.get("protocol", from_file.get("protocol", DEFAULT_PROTOCOL))
    lr = None
    if not get_protocol(str(protocol)).trains_locally:
        # FedSGD trains no steps: a local rate here is the one a weight difference is
        # divided by to read it as a gradient, not a setting of the protocol.
        lr = overrides.pop("local_lr", from_file.get("local_lr"))
        overrides["local_lr"] = None
    batch_size = overrides.pop("batch_size", from_file.get("batch_size"))
    config = load_run_config(args.config, overrides)
    files = CapturedFiles(args.update, args.update_base, args.update_kind, args.truth)
    return CapturedRequest(config, files, batch_size=batch_size, lr=lr)


def _refuse(overrides: dict[str, Any], from_file: dict[str, Any]) -> None:
    """Refuse a setting of `NOT_FOR_CAPTURED` given other than as its default (--users 1
    and --modality image say nothing a captured run cannot do)."""
    defaults = RunConfig()
    for name, (flag, why) in NOT_FOR_CAPTURED.items():
        default = getattr(defaults, name, None)
        if _differs(overrides.get(name, default), default):
            raise GradleakError(f"{flag} does not apply to --update: {why}; drop it")
        if _differs(from_file.get(name, default), default):
            raise GradleakError(
                f"config key {name!r} does not apply to --update: {why}; remove it from the file"
            )


def _differs(value: object, default: object) -> bool:
    # Flags and files give lists where the settings hold tuples.
    return (tuple(value) if isinstance(value, list) else value) != default
