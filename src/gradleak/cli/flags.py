"""Flags several commands share, declared once so their spelling, parsing and help agree.

A command declares a shared flag with `FLAG.add(parser)`, adapting only what its context
changes (a help worded for the command, a default, `required`); the groups of flags that
travel together have one `add_*_flags` function each. `apply_threads` is the one place
that acts on --threads.
"""

from __future__ import annotations

import argparse
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gradleak.attacks.labels import AUTO, LABEL_STRATEGIES
from gradleak.cli import values
from gradleak.core.device import AUTO as AUTO_DEVICE
from gradleak.core.device import DEVICE_HELP, device_spelling, resolve_device
from gradleak.core.errors import GradleakError
from gradleak.core.update import UpdateKind
from gradleak.fl.protocols import DEFAULT_LOCAL_LR, protocol_sharing
from gradleak.models import available_models
from gradleak.scenario.config import (
    DATASET_CHOICES,
    MODALITY_CHOICES,
    MODEL_MODES,
    PROTOCOLS,
    SPLITS,
    TEXT_TASKS,
)

if TYPE_CHECKING:
    import torch

LABEL_STRATEGY_CHOICES = (AUTO, *LABEL_STRATEGIES)

# argparse groups and parsers both have add_argument.
Flags = argparse.ArgumentParser | argparse._ArgumentGroup
# What `add_parser` is called on: the subcommands of `gradleak`.
Commands = argparse._SubParsersAction


@dataclass(frozen=True)
class Flag:
    """One flag: its spelling and the add_argument options every command gives it.

    Attributes:
        name: the spelling, e.g. '--model'.
        options: add_argument keywords (type, metavar, choices, dest, usual help, ...).
    """

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def help(self) -> str:
        """The usual help, for a command that adds to it."""
        return str(self.options.get("help", ""))

    def add(self, p: Flags, **changes: Any) -> None:
        """Declare the flag on a parser or argument group.

        Args:
            p: the parser or group.
            **changes: add_argument keywords that replace the usual ones for this command.
        """
        p.add_argument(self.name, **{**self.options, **changes})


def _flag(name: str, **options: Any) -> Flag:
    return Flag(name, options)


def add_flags(
    p: Flags,
    flags: Sequence[Flag],
    *,
    only: Collection[str] | None = None,
    changes: Mapping[str, Mapping[str, Any]] | None = None,
) -> None:
    """Declare several flags, in the order of `flags`.

    Args:
        p: the parser or group.
        flags: the flags, in the order their help lists them.
        only: the spellings this command offers (default: all of `flags`).
        changes: add_argument keywords that replace the usual ones, by spelling.

    Raises:
        ValueError: `only` or `changes` names a flag that is not in `flags`.
    """
    names = {flag.name for flag in flags}
    unknown = (set(only or ()) | set(changes or {})) - names
    if unknown:
        raise ValueError(f"not among these flags: {', '.join(sorted(unknown))}")
    for flag in flags:
        if only is None or flag.name in only:
            flag.add(p, **(changes or {}).get(flag.name, {}))


# --- model and data ---------------------------------------------------------------------------

MODEL = _flag(
    "--model",
    metavar="NAME",
    help=f"model: {', '.join(available_models())}, or your own: MODULE:FACTORY or "
    "FILE.py:FACTORY, a callable returning an nn.Module",
)
MODEL_ARG = _flag(
    "--model-arg",
    dest="model_args",
    action=values.ModelArgs,
    metavar="KEY=VALUE",
    help="keyword argument of a MODULE:FACTORY model, repeatable; VALUE is read as YAML "
    "(16, 0.5, true, word)",
)
DATASET = _flag("--dataset", choices=DATASET_CHOICES, help="dataset (default cifar10)")
DATA_ROOT = _flag(
    "--data-root",
    type=Path,
    metavar="DIR",
    help="folder with the dataset files (list, tensors: the .csv/.json or .npz/.pt file)",
)
NORMALIZE = _flag(
    "--normalize",
    metavar="SPEC",
    help="normalisation statistics (public knowledge): auto (the data's own per-channel mean "
    "and std, from at most 2000 images), a dataset (cifar10, cifar100, mnist, imagenet) or "
    "MEAN/STD such as 0.5,0.5,0.5/0.25,0.25,0.25 (default: the dataset's, imagenet's for "
    "your own images)",
)
SPLIT = _flag("--split", choices=SPLITS, help="dataset split (default test)")
INDICES = _flag("--index", dest="indices", type=int, nargs="+", metavar="I")
BATCH_SIZE = _flag("--batch-size", type=int, metavar="B")
IMAGE_SIZE = _flag("--image-size", type=int, metavar="N")
CHECKPOINT = _flag("--checkpoint", type=Path, metavar="CKPT")
MODEL_MODE = _flag("--model-mode", choices=MODEL_MODES)
LABELS_KNOWN = _flag("--labels-known", action="store_true", default=None)
MALICIOUS_SERVER = _flag(
    "--malicious-server",
    action="store_true",
    default=None,
    help="threat model: the server is malicious and may alter the model it sends the "
    "clients (imprint needs it; without it the server is honest but curious)",
)
SEED = _flag("--seed", type=int, metavar="S")
OUT = _flag("--out", type=Path, metavar="DIR")
# Without it, an output folder that already holds files is refused before any work.
OVERWRITE = _flag(
    "--overwrite",
    action="store_true",
    help="replace what --out already holds: the new results replace the old ones whole "
    "once written (the old stay if the command fails first)",
)


def add_model_and_data_flags(p: Flags) -> None:
    """--model, --model-arg, --dataset, --data-root, --split, --normalize, each optional with
    the run's default."""
    MODEL.add(p, help=f"{MODEL.help} (default lenet)")
    MODEL_ARG.add(p)
    DATASET.add(p)
    DATA_ROOT.add(p, help=f"{DATA_ROOT.help} (default for cifar10: bundled sample images)")
    SPLIT.add(p)
    NORMALIZE.add(p)


# --- text ---------------------------------------------------------------------------------------

TEXT_FLAGS = (
    _flag(
        "--modality",
        choices=MODALITY_CHOICES,
        help="kind of data: image (default) or text (default model minilm, attack span)",
    ),
    _flag(
        "--text",
        dest="texts",
        action="append",
        metavar="SENTENCE",
        help="text: one private sentence, repeatable (the batch; default: the bundled sentences)",
    ),
    _flag(
        "--text-file",
        type=Path,
        metavar="FILE",
        help="text: a UTF-8 file of sentences, one per line (--index picks them)",
    ),
    _flag("--task", choices=TEXT_TASKS, help="text: the clients' task (default classification)"),
    _flag(
        "--lengths-known",
        action="store_true",
        default=None,
        help="text threat model: the attacker knows each sentence's length in tokens",
    ),
)


def add_text_flags(p: Flags) -> None:
    """--modality, --text, --text-file, --task, --lengths-known."""
    add_flags(p, TEXT_FLAGS)


# --- the attack -------------------------------------------------------------------------------

ITERATIONS = _flag("--iterations", type=int, metavar="N", help="optimisation steps")
ADMM_READING = _flag(
    "--admm-reading",
    choices=tuple(r.name for r in protocol_sharing(UpdateKind.ADMM_INCREMENT).readings),
    help="the -admm attacks: replay the FedADMM client's round and match −Δ'/η with −Δ/η "
    "(replay, default), or match −Δ/η with one plain gradient (gradient)",
)
ATTACK_TUNING_FLAGS = (
    ITERATIONS,
    _flag("--restarts", type=int, metavar="K", help="independent trials; best is kept"),
    _flag("--lr", type=float, help="step size of the attack's optimiser"),
    _flag("--tv", type=float, dest="tv_weight", help="total-variation weight"),
    _flag(
        "--prior",
        action="append",
        dest="priors",
        type=values.prior_spec,
        metavar="SPEC",
        help="an image prior in the loss, repeatable: tv[:W], bn[:W] (batch-norm statistics: "
        "the client's where shared, else the server's), bn-server[:W], bn-client[:W], "
        "gan:PRIOR.pt (search a generator's latent, GGL), gias:PRIOR.pt (then fine-tune it, "
        "GIAS); given, it replaces the default TV (gradleak list shows them)",
    ),
    _flag(
        "--group-consistency",
        type=values.group_consistency,
        metavar="K[:W]",
        help="K seeds optimised together and pulled toward their registered mean with "
        "weight W (default 0.01), GradInversion's group consistency; sets --restarts K",
    ),
    _flag(
        "--init",
        metavar="INIT",
        help="how the trials start: randn (default), uniform, zeros, or learned:INV.pt (a "
        "learned inverter's reconstruction, gradleak train-inverter)",
    ),
    _flag(
        "--label-strategy",
        choices=LABEL_STRATEGY_CHOICES,
        help="where the attack gets labels (auto: known if granted, else iDLG for batch 1, "
        "else optimised; sign, yin, count: read from the last layer for batches)",
    ),
)


# The closed-form batch attacks' settings: spear's sample budget, imprint's bins.
CLOSED_FORM_FLAGS = (
    _flag(
        "--max-samples",
        type=int,
        metavar="N",
        help="spear: the most candidate directions sampled before it stops with what is certified",
    ),
    _flag(
        "--bins",
        type=int,
        metavar="K",
        help="imprint: the imprint layer's bins (neurons), at least 2 (default 256)",
    ),
    _flag(
        "--bin-statistic",
        dest="statistic",
        metavar="STAT",
        help="imprint: the image statistic its bins split: random (a fixed random "
        "projection, default) or mean (the mean pixel)",
    ),
)


def add_closed_form_flags(p: Flags) -> None:
    """--max-samples (spear), --bins and --bin-statistic (imprint)."""
    add_flags(p, CLOSED_FORM_FLAGS)


def add_attack_tuning_flags(p: Flags) -> None:
    """--iterations, --restarts, --lr, --tv, --prior, --group-consistency, --init,
    --label-strategy: the attack's hyper-parameters."""
    add_flags(p, ATTACK_TUNING_FLAGS)


# --- the federated protocol and what the attacker guesses of it -------------------------------

PROTOCOL_FLAGS = (
    _flag("--protocol", choices=PROTOCOLS, help="the federated protocol (default fedsgd)"),
    _flag("--local-steps", type=int, metavar="S", help="local SGD steps (default 1)"),
    _flag("--local-epochs", type=int, metavar="E", help="local epochs instead of steps"),
    _flag("--local-batch-size", type=int, metavar="b", help="local mini-batch (default: all n)"),
    _flag("--local-lr", type=float, metavar="LR", help=f"local learning rate ({DEFAULT_LOCAL_LR})"),
    _flag("--users", type=int, metavar="N", help="users aggregated by the server (1)"),
    _flag("--admm-rho", type=float, metavar="RHO", help="FedADMM penalty ρ (1.0)"),
    _flag("--rounds", type=int, metavar="R", help="attack round R's update (default 1)"),
    _flag(
        "--share-buffers",
        action="store_true",
        default=None,
        help="clients send their batch-norm running statistics with the update",
    ),
)
GUESS_FLAGS = (
    _flag("--guess-local-steps", type=int, metavar="S"),
    _flag("--guess-local-epochs", type=int, metavar="E"),
    _flag("--guess-local-batch-size", type=int, metavar="b"),
    _flag("--guess-local-lr", type=float, metavar="LR"),
    _flag(
        "--attacker-model-mode",
        choices=MODEL_MODES,
        help="the batch-norm mode the attacker assumes (default: the client's)",
    ),
    _flag("--guess-admm-rho", type=float, metavar="RHO", help="fedadmm: the attacker's ρ"),
    _flag(
        "--client-state-known",
        action="store_true",
        default=None,
        help="fedadmm: the attacker knows each client's x and π at the start of the attacked "
        "round (a server that received the client's earlier increments can compute them); "
        "the -admm attacks' replay needs it after round 1",
    ),
)


def add_protocol_flags(
    p: Flags,
    *,
    only: Collection[str] | None = None,
    protocols: Sequence[str] = PROTOCOLS,
    helps: Mapping[str, str] | None = None,
) -> None:
    """The protocol the clients follow: --protocol, --local-*, --users, --admm-rho, ...

    Args:
        p: the parser or group.
        only: the spellings this command offers (default: all).
        protocols: the --protocol choices this command offers.
        helps: help worded for this command, by spelling, where a flag means more here.
    """
    changes: dict[str, dict[str, Any]] = {"--protocol": {"choices": protocols}}
    for name, text in (helps or {}).items():
        changes.setdefault(name, {})["help"] = text
    add_flags(p, PROTOCOL_FLAGS, only=only, changes=changes)


def add_guess_flags(
    p: Flags, *, only: Collection[str] | None = None, helps: Mapping[str, str] | None = None
) -> None:
    """What the attacker believes of the protocol: --guess-local-*, --attacker-model-mode.

    Args:
        p: the parser or group.
        only: the spellings this command offers (default: all).
        helps: help worded for this command, by spelling.
    """
    changes = {name: {"help": text} for name, text in (helps or {}).items()}
    add_flags(p, GUESS_FLAGS, only=only, changes=changes)


# --- how a command runs -----------------------------------------------------------------------

THREADS = _flag("--threads", type=int, metavar="N", help="CPU threads for torch")
# torch's OpenMP pool aborts the whole process, with no Python error, when it cannot start
# the threads it was told to use, so absurd counts are refused before torch sees them. The
# cap is fixed rather than a multiple of this machine's cores because sweep cells may run on
# other, larger machines (Ray); it is above the hardware threads of any one machine.
MAX_THREADS = 1024
NO_PROGRESS = _flag("--no-progress", action="store_true", help="hide the progress bar")
# Studies attack the cells that differ only in their image and seed as stacked attacks.
NO_STACK = _flag(
    "--no-stack",
    action="store_true",
    help="run every cell as its own attack (default: cells that differ only in their image "
    "and seed are attacked together, one stacked computation per chunk, where the attack "
    "stacks: Adam attacks on images)",
)
DEVICE = _flag("--device", metavar="DEV", help=DEVICE_HELP)
CONFIG = _flag("--config", type=Path, metavar="FILE", help="YAML/JSON file of run settings")


def add_execution_flags(p: Flags) -> None:
    """Where sweep cells run: --workers, --backend, --address, --threads, --device,
    --no-progress, --no-stack."""
    p.add_argument("--workers", type=int, default=1, metavar="N", help="local worker processes")
    p.add_argument(
        "--backend",
        choices=("local", "ray"),
        default="local",
        help="local processes, or Ray tasks (needs gradleak[ray])",
    )
    p.add_argument(
        "--address", metavar="ADDR", help="Ray cluster address (default: start Ray locally)"
    )
    THREADS.add(p, help="torch threads per cell (default: cores/workers)")
    DEVICE.add(p, help=f"{DEVICE_HELP}; each cell resolves it where it runs")
    NO_PROGRESS.add(p)
    NO_STACK.add(p)


def apply_threads(threads: int | None, *, in_this_process: bool = True) -> None:
    """Check --threads and give torch that many threads.

    Args:
        threads: the flag's value; None leaves torch's choice.
        in_this_process: False where the threads go to sweep cells, which set their own:
            then the value is only checked.

    Raises:
        GradleakError: `threads` is outside 1..`MAX_THREADS`.
    """
    if threads is None:
        return
    if not 1 <= threads <= MAX_THREADS:
        bound = "at least 1" if threads < 1 else f"at most {MAX_THREADS}"
        raise GradleakError(f"--threads must be {bound}, got {threads} (allowed: 1..{MAX_THREADS})")
    if in_this_process:
        import torch  # heavy: only once a command runs

        torch.set_num_threads(threads)


def apply_device(device: str | None) -> torch.device:
    """Check --device and resolve it, before any work: the one place that reads the flag.

    Args:
        device: the flag's value; None means auto.

    Returns:
        The device the command computes on (auto: CUDA, else MPS, else the CPU).

    Raises:
        GradleakError: an unknown spelling or a device this machine does not have, in one
            line naming the fix.
    """
    return resolve_device(AUTO_DEVICE if device is None else device)


def check_device_flag(device: str | None, *, here: bool = True) -> None:
    """Check --device for work that resolves it later (sweep cells), before any work.

    Args:
        device: the flag's value; None leaves it to each cell (auto unless its spec says).
        here: the work runs on this machine, so the device must exist here; False (Ray
            workers) checks the spelling only.

    Raises:
        GradleakError: an unknown spelling, or with `here` a device this machine lacks.
    """
    if device is not None:
        (resolve_device if here else device_spelling)(device)
