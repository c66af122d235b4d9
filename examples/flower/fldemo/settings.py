"""The demo's settings: its two configurations, their defaults, and the command line."""

from __future__ import annotations

import argparse
import functools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from gradleak.core.errors import GradleakError
from gradleak.data import input_shape
from gradleak.fl.local_training import LocalTraining
from gradleak.integrations.flower import AttackPlan, FlowerTarget
from gradleak.models import build_model

REPO = Path(__file__).resolve().parents[3]
# The project's shared data sits beside the repository (as for the benchmarks).
DATA_ROOT = REPO.parent / "shared" / "data"
DATASETS = ("cifar10", "mnist")
NUM_CLASSES = 10  # both datasets


@dataclass(frozen=True)
class Preset:
    """What a configuration does unless flags say otherwise.

    Attributes:
        protocol: how the server reads a reply (`FlowerTarget.protocol`).
        batch_size: images a client trains on in a round.
        local_steps: local SGD steps (None: one step on the whole batch, FedSGD).
        local_batch_size: the mini-batch of each local step (None: the whole batch).
        attack: the server's attack, with its options, by model family (mlp, mlp2-256:
            `mlp`), else `default`.
    """

    protocol: str
    batch_size: int
    local_steps: int | None
    local_batch_size: int | None
    attack: Mapping[str, tuple[str, Mapping[str, Any]]]


# FedSGD: iDLG reads the label and matches the gradient (DLG's sigmoid LeNet leaks almost
# exactly); through an MLP the analytic attack is exact. FedAvg: five local steps on a
# batch of 4 turn the update away from any one gradient; IG, replaying the known local
# training (cosine matching), is the attack that still recovers something within a minute.
PRESETS = {
    "fedsgd": Preset("fedsgd", 1, None, None, {"default": ("idlg", {}), "mlp": ("analytic", {})}),
    "fedavg": Preset(
        "fedavg", 4, 5, None, {"default": ("ig", {"iterations": 1000, "restarts": 1})}
    ),
}

# The clients' learning rate by model family: DLG's LeNet (sigmoids, weights drawn from
# uniform(−0.5, 0.5)) starts with large logits and its loss grows at 0.1; 0.01 lowers it.
LEARNING_RATES = {"default": 0.1, "lenet": 0.01}


@dataclass(frozen=True)
class Guard:
    """The clients' `LeakageGuard`: its own attack, threshold and defenses."""

    attack: str
    options: Mapping[str, Any]
    threshold_psnr: float
    defenses: tuple[str, ...]


@dataclass(frozen=True)
class Demo:
    """One run of the demo (see `parse` for what each field means)."""

    config: str
    dataset: str
    model: str
    clients: int
    rounds: int
    batch_size: int
    lr: float
    local_steps: int | None
    local_batch_size: int | None
    attack: str
    attack_options: Mapping[str, Any]
    attack_rounds: frozenset[int] | None
    guard: Guard | None
    data_root: Path
    out: Path
    seed: int = 0
    threads: int = 1
    overwrite: bool = False

    @property
    def protocol(self) -> str:
        return PRESETS[self.config].protocol

    def model_factory(self) -> Callable[[], nn.Module]:
        """The clients' architecture, the same initial weights every time (picklable)."""
        channels, size = input_shape(self.dataset)
        return functools.partial(
            build_model,
            self.model,
            num_classes=NUM_CLASSES,
            in_channels=channels,
            image_size=size,
            seed=self.seed,
        )

    def train_config(self) -> dict[str, int | float]:
        """What the server tells its clients in every training message."""
        config: dict[str, int | float] = {"lr": self.lr}
        if self.local_steps is not None:
            config["local-steps"] = self.local_steps
        if self.local_batch_size is not None:
            config["local-batch-size"] = self.local_batch_size
        return config

    def target(self) -> FlowerTarget:
        """What the server knows of its clients' training (the protocol it configured)."""
        return FlowerTarget.for_dataset(
            self.dataset,
            model=self.model_factory(),
            protocol=self.protocol,
            lr=self.lr,
            local_steps=self.local_steps,
            local_batch_size=self.local_batch_size,
        )

    def plan(self) -> AttackPlan:
        """The server's attack, on the rounds asked for, every client."""
        return AttackPlan(
            self.attack, dict(self.attack_options), rounds=self.attack_rounds, seed=self.seed
        )


def local_training(config: Mapping[str, Any]) -> LocalTraining:
    """A client's local training from a round's train config (`Demo.train_config`).

    Without local steps it is FedSGD's one SGD step on the whole batch.
    """
    batch = config.get("local-batch-size")
    return LocalTraining(
        lr=float(config["lr"]),
        steps=int(config.get("local-steps", 1)),
        batch_size=None if batch is None else int(batch),
    )


def parse_rounds(text: str) -> frozenset[int] | None:
    """`all`, or rounds and ranges: `1-3,10` → {1, 2, 3, 10}.

    Raises:
        GradleakError: anything else.
    """
    if text.strip().lower() == "all":
        return None
    rounds: set[int] = set()
    try:
        for part in text.split(","):
            first, _, last = part.strip().partition("-")
            rounds.update(range(int(first), int(last or first) + 1))
    except ValueError as exc:
        raise GradleakError(f"--attack-rounds {text!r} is not 'all' or rounds like 1-3,10") from exc
    if not rounds or min(rounds) < 1:
        raise GradleakError(f"--attack-rounds {text!r} must name rounds from 1 on")
    return frozenset(rounds)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="examples/flower/run.py",
        description="A Flower simulation whose server attacks every client's update with "
        "gradleak; optionally the clients guard their updates (LeakageGuard).",
    )
    add = parser.add_argument
    add("--config", choices=sorted(PRESETS), default="fedsgd", help="protocol (fedsgd)")
    add("--dataset", choices=DATASETS, default="cifar10", help="dataset (cifar10)")
    add("--model", default="lenet", help="a gradleak model, e.g. lenet or mlp (lenet)")
    add("--clients", type=int, default=2, help="clients, each with its own images (2)")
    add("--rounds", type=int, default=3, help="server rounds (3)")
    add("--batch-size", type=int, help="images a client trains on per round (fedsgd 1, fedavg 4)")
    add("--lr", type=float, help="the clients' SGD learning rate (lenet 0.01, else 0.1)")
    add("--local-steps", type=int, help="fedavg: local SGD steps (5)")
    add("--local-batch-size", type=int, help="fedavg: mini-batch of a local step (the batch)")
    add("--attack", help="the server's attack (fedsgd: idlg, analytic on mlp; fedavg: ig)")
    add("--iterations", type=int, help="the attack's iterations (its preset's, or fedavg's 1000)")
    add("--attack-rounds", default="all", help="rounds the server attacks: all, or e.g. 1-3,10")
    add("--guard", action="store_true", help="clients run LeakageGuard before replying")
    add("--guard-threshold", type=float, default=20.0, help="guard: defend above this PSNR (20)")
    add(
        "--guard-defense",
        action="append",
        help="guard: a defense spec, repeatable (noise:gaussian:1e-6, on the weight change)",
    )
    add("--guard-attack", help="guard: the clients' own check (the server's attack)")
    add("--data-root", type=Path, default=DATA_ROOT, help=f"datasets' folder ({DATA_ROOT})")
    add("--out", type=Path, help="output folder (runs/flower-CONFIG-DATASET[-guard])")
    add("--overwrite", action="store_true", help="replace what --out holds")
    add("--seed", type=int, default=0, help="model, partition, attack and guard seed (0)")
    add("--threads", type=int, default=1, help="torch threads of the server's attacks (1)")
    return parser


def _positive(name: str, value: int | float | None) -> None:
    if value is not None and not value > 0:
        raise GradleakError(f"{name} must be positive, got {value}")


def parse(argv: Sequence[str] | None = None) -> Demo:
    """The demo the command line asks for.

    Args:
        argv: the arguments (None: `sys.argv[1:]`).

    Returns:
        The run's settings.

    Raises:
        GradleakError: flags that do not fit together or are out of range.
    """
    args = _parser().parse_args(argv)
    preset = PRESETS[args.config]
    if preset.local_steps is None and (args.local_steps or args.local_batch_size):
        raise GradleakError(
            "--local-steps and --local-batch-size are fedavg's; add --config fedavg"
        )
    for name in ("clients", "rounds", "batch_size", "lr", "local_steps", "local_batch_size"):
        _positive(f"--{name.replace('_', '-')}", getattr(args, name))
    _positive("--threads", args.threads)
    family = re.match(r"[a-z]*", args.model.strip().lower()).group()  # mlp2-256 → mlp
    default_attack, default_options = preset.attack.get(family, preset.attack["default"])
    attack = args.attack or default_attack
    options = dict(default_options) if attack == default_attack else {}
    if args.iterations is not None:
        options["iterations"] = args.iterations
    guard = None
    if args.guard:
        guard_attack = args.guard_attack or attack
        guard = Guard(
            attack=guard_attack,
            options=options if guard_attack == attack else {},
            threshold_psnr=args.guard_threshold,
            defenses=tuple(args.guard_defense or ("noise:gaussian:1e-6",)),
        )
    suffix = "-guard" if args.guard else ""
    out = args.out or REPO / "runs" / f"flower-{args.config}-{args.dataset}{suffix}"
    return Demo(
        config=args.config,
        dataset=args.dataset,
        model=args.model,
        clients=args.clients,
        rounds=args.rounds,
        batch_size=args.batch_size or preset.batch_size,
        lr=args.lr or LEARNING_RATES.get(family, LEARNING_RATES["default"]),
        local_steps=args.local_steps or preset.local_steps,
        local_batch_size=args.local_batch_size or preset.local_batch_size,
        attack=attack,
        attack_options=options,
        attack_rounds=parse_rounds(args.attack_rounds),
        guard=guard,
        data_root=args.data_root,
        out=out,
        seed=args.seed,
        threads=args.threads,
        overwrite=args.overwrite,
    )
