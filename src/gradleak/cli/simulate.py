"""The `gradleak simulate` subcommand: decentralised peers that attack their neighbours."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gradleak.cli.flags import add_attack_tuning_flags, add_model_and_data_flags
from gradleak.core.errors import GradleakError
from gradleak.fl.protocols import DEFAULT_LOCAL_LR
from gradleak.fl.topology import MIXING, TOPOLOGIES
from gradleak.scenario.config import MODEL_MODES, load_run_config
from gradleak.studies.peers import peer_attacks

if TYPE_CHECKING:
    from gradleak.studies.peers import PairResult

EXIT_INTERRUPTED = 130

# Flags that fill the run settings (RunConfig) under the same name.
_RUN_FLAGS = (
    "attack",
    "model",
    "dataset",
    "data_root",
    "split",
    "batch_size",
    "checkpoint",
    "seed",
    "out",
    "model_mode",
    "labels_known",
    "protocol",
    "local_steps",
    "local_epochs",
    "local_batch_size",
)
_ATTACK_FLAGS = ("iterations", "restarts", "lr", "tv_weight", "label_strategy")


def add_simulate(commands: argparse._SubParsersAction) -> None:
    """Register `gradleak simulate` on the command's subparsers."""
    topologies = "; ".join(f"{name}: {shape.text}" for name, shape in TOPOLOGIES.items())
    p = commands.add_parser(
        "simulate",
        help="decentralised training on a peer graph; every peer attacks its neighbours",
        description="Simulate P peers that each hold b consecutive images (peer i: START + "
        "i·b …), share their updates with their neighbours in the graph, step and gossip-"
        "average their models for R rounds; in round R every peer attacks each neighbour's "
        "update. Writes simulation.json/.csv/.md, grid.png (truths over every attacker's "
        "reconstructions) and best.png, and prints the P×P PSNR table.",
    )
    g = p.add_argument_group("network")
    g.add_argument("--peers", type=int, default=4, metavar="P", help="number of peers (4)")
    g.add_argument(
        "--topology", choices=list(TOPOLOGIES), default="ring", help=f"graph ({topologies})"
    )
    g.add_argument(
        "--mixing",
        choices=list(MIXING),
        default="metropolis",
        help="gossip weights: metropolis (doubly stochastic on any graph) or uniform (the "
        "mean of a peer and its neighbours); equal on ring and full",
    )
    g.add_argument(
        "--rounds", type=int, default=1, metavar="R", help="rounds; round R is attacked (1)"
    )
    g.add_argument(
        "--protocol",
        choices=("fedsgd", "fedavg"),
        help="what peers share: a gradient, or the weight difference after local SGD",
    )
    g.add_argument("--local-steps", type=int, metavar="S", help="fedavg local steps (1)")
    g.add_argument("--local-epochs", type=int, metavar="E", help="fedavg local epochs")
    g.add_argument("--local-batch-size", type=int, metavar="b", help="fedavg local mini-batch")
    g.add_argument(
        "--local-lr",
        type=float,
        metavar="LR",
        help=f"step size of a peer's own SGD step (fedsgd) or local SGD (fedavg) "
        f"({DEFAULT_LOCAL_LR})",
    )
    d = p.add_argument_group("data, model and attack")
    d.add_argument("--attack", choices=peer_attacks(), help="attack preset (default dlg)")
    add_model_and_data_flags(d)
    d.add_argument("--index", type=int, metavar="START", help="first image of peer 0 (0)")
    d.add_argument("--batch-size", type=int, metavar="b", help="images per peer (default 1)")
    d.add_argument("--checkpoint", type=Path, metavar="CKPT", help="initial model state")
    d.add_argument("--model-mode", choices=MODEL_MODES, help="peers' batch-norm mode (train)")
    d.add_argument(
        "--labels-known",
        action="store_true",
        default=None,
        help="threat model: attackers know their neighbours' labels",
    )
    add_attack_tuning_flags(d)
    p.add_argument("--seed", type=int, metavar="S", help="model init; attackers' seeds derive")
    p.add_argument("--out", type=Path, metavar="DIR", help="output folder (default runs/...)")
    p.add_argument("--config", type=Path, metavar="FILE", help="YAML/JSON file of run settings")
    p.add_argument("--threads", type=int, metavar="N", help="CPU threads for torch")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.set_defaults(handler=run_simulate)


def run_simulate(args: argparse.Namespace) -> int:
    """Simulate and attack as the flags say; print the tables; 130 after Ctrl-C."""
    import torch  # heavy imports only when simulating

    from gradleak.studies.peers import DecentralizedConfig, markdown_tables, run_decentralized

    if args.threads is not None:
        if args.threads < 1:
            raise GradleakError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    overrides: dict[str, Any] = {k: getattr(args, k) for k in _RUN_FLAGS}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if args.index is not None:
        overrides["indices"] = [args.index]
    options = {k: getattr(args, k) for k in _ATTACK_FLAGS if getattr(args, k) is not None}
    overrides["attack_options"] = options
    if args.no_progress:
        overrides["progress"] = False
    run = load_run_config(args.config, dict(overrides))
    sgd_lr = DEFAULT_LOCAL_LR
    if args.local_lr is not None:
        # fedsgd has no local training: the rate is the peer's own gradient step.
        if run.protocol == "fedsgd":
            sgd_lr = args.local_lr
        else:
            run = load_run_config(args.config, {**overrides, "local_lr": args.local_lr})
    config = DecentralizedConfig(
        run=run,
        peers=args.peers,
        topology=args.topology,
        mixing=args.mixing,
        rounds=args.rounds,
        sgd_lr=sgd_lr,
    )

    def report(pair: PairResult) -> None:
        ev = pair.evaluation
        print(
            f"peer {pair.attacker} attacked peer {pair.victim}: PSNR {ev.psnr:.2f} dB "
            f"({pair.view} model, {pair.reconstruction.iterations} iterations in "
            f"{pair.reconstruction.seconds:.1f} s)",
            flush=True,
        )

    result = run_decentralized(config, on_pair=report)
    print()
    print(markdown_tables(result), end="")
    if result.interrupted:
        print(f"interrupted: partial results written to {result.out_dir}", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"outputs written to {result.out_dir}")
    return 0
