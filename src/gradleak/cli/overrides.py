"""Parsed flags → RunConfig overrides: what a command's flags say about the run."""

from __future__ import annotations

import argparse
from collections.abc import Collection, Iterable
from typing import Any

# Flags that fill the RunConfig setting of the same name, in the order they are applied.
RUN_SETTINGS = (
    "attack",
    "model",
    "model_args",
    "dataset",
    "data_root",
    "split",
    "indices",
    "image",
    "label",
    "num_classes",
    "image_size",
    "normalize",
    "batch_size",
    "checkpoint",
    "seed",
    "out",
    "model_mode",
    "labels_known",
    "stop_psnr",
    "protocol",
    "local_steps",
    "local_epochs",
    "local_batch_size",
    "local_lr",
    "users",
    "admm_rho",
    "rounds",
    "share_buffers",
    "guess_local_steps",
    "guess_local_epochs",
    "guess_local_batch_size",
    "guess_local_lr",
    "attacker_model_mode",
    "guess_admm_rho",
    "client_state_known",
    "defenses",
    "modality",
    "texts",
    "text_file",
    "task",
    "lengths_known",
    "malicious_server",
    "device",
)
# Flags that fill the attack's options (RunConfig.attack_options) of the same name.
ATTACK_OPTIONS = (
    "iterations",
    "restarts",
    "lr",
    "tv_weight",
    "label_strategy",
    "compile",
    "admm_reading",
    "priors",
    "init",
    "bins",
    "statistic",
    "max_samples",
)


def given(args: argparse.Namespace, names: Iterable[str]) -> dict[str, Any]:
    """The flags among `names` that the command offers and that were given, by name.

    Args:
        args: the parsed flags.
        names: flag destinations; ones the command does not offer are passed over.

    Returns:
        name → value for every flag whose value is not None, in the order of `names`
        (flags default to None so that a config file can supply the value instead).
    """
    values = vars(args)
    return {name: values[name] for name in names if values.get(name) is not None}


def run_overrides(args: argparse.Namespace, *, skip: Collection[str] = ()) -> dict[str, Any]:
    """The overrides for `load_run_config`: run settings, attack options and --no-progress.

    Args:
        args: the parsed flags of a command that runs attacks.
        skip: flag destinations that mean something else for this command.

    Returns:
        The run settings given, "attack_options" with the attack options given, and
        "progress": False where --no-progress was given.
    """
    overrides = given(args, (name for name in RUN_SETTINGS if name not in skip))
    overrides["attack_options"] = given(args, ATTACK_OPTIONS)
    group = getattr(args, "group_consistency", None)
    if group is not None:  # K seeds form the group: K restarts unless --restarts says otherwise
        seeds, weight = group
        options = overrides["attack_options"]
        options["group_consistency"] = seeds
        options.setdefault("restarts", seeds)
        if weight is not None:
            options["group_weight"] = weight
    if getattr(args, "no_progress", False):
        overrides["progress"] = False
    return overrides
