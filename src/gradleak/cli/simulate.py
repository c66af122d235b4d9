"""The `gradleak simulate` command: decentralised peers that attack their neighbours."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from gradleak.cli import flags
from gradleak.cli.exits import EXIT_INTERRUPTED, EXIT_OK
from gradleak.cli.overrides import run_overrides
from gradleak.fl.protocols import DEFAULT_LOCAL_LR, PROTOCOLS
from gradleak.fl.topology import MIXING, TOPOLOGIES
from gradleak.scenario.config import load_run_config
from gradleak.studies.peers import peer_attacks, peer_protocols

if TYPE_CHECKING:
    from gradleak.studies.peers import PairResult

# Flags that mean something else here than in a run's settings: --rounds counts the rounds
# of peer training, and --local-lr is a peer's own SGD step under fedsgd.
_NOT_RUN_SETTINGS = ("rounds", "local_lr")


def add_simulate(commands: flags.Commands) -> None:
    """Register `gradleak simulate` on the subcommands of `gradleak`."""
    topologies = "; ".join(f"{name}: {shape.text}" for name, shape in TOPOLOGIES.items())
    p = commands.add_parser(
        "simulate",
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
    flags.add_protocol_flags(
        g,
        only=("--protocol", "--local-steps", "--local-epochs", "--local-batch-size", "--local-lr"),
        protocols=tuple(peer_protocols()),
        helps={
            "--protocol": "what peers share: a gradient, or the weight difference after local SGD",
            "--local-lr": "step size of a peer's own SGD step (fedsgd) or local SGD (fedavg) "
            f"({DEFAULT_LOCAL_LR})",
        },
    )
    d = p.add_argument_group("data, model and attack")
    d.add_argument("--attack", choices=peer_attacks(), help="attack preset (default dlg)")
    flags.add_model_and_data_flags(d)
    d.add_argument("--index", type=int, metavar="START", help="first image of peer 0 (0)")
    flags.BATCH_SIZE.add(d, metavar="b", help="images per peer (default 1)")
    flags.CHECKPOINT.add(d, help="initial model state")
    flags.MODEL_MODE.add(d, help="peers' batch-norm mode (train)")
    flags.LABELS_KNOWN.add(d, help="threat model: attackers know their neighbours' labels")
    flags.add_attack_tuning_flags(d)
    flags.SEED.add(p, help="model init; attackers' seeds derive")
    flags.OUT.add(p, help="output folder (default runs/NAME-DIGEST, named by the settings)")
    flags.OVERWRITE.add(p)
    flags.CONFIG.add(p)
    flags.THREADS.add(p)
    flags.DEVICE.add(p)
    flags.NO_PROGRESS.add(p, help="hide the progress bars")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Simulate and attack as the flags say; one line per attack, then the tables.

    Args:
        args: the parsed flags of `gradleak simulate`.

    Returns:
        0, or 130 after Ctrl-C (143 after SIGTERM, `cli/app.py`) once the partial results
        are written.

    Raises:
        GradleakError: bad network, settings, data, --threads, --device or --out.
    """
    from gradleak.studies.peers import DecentralizedConfig, markdown_tables, run_decentralized

    flags.apply_threads(args.threads)
    overrides = run_overrides(args, skip=_NOT_RUN_SETTINGS)
    if args.index is not None:
        overrides["indices"] = [args.index]
    run = load_run_config(args.config, dict(overrides))
    sgd_lr = DEFAULT_LOCAL_LR
    if args.local_lr is not None:
        # Without local training the rate is the peer's own gradient step.
        if not PROTOCOLS[run.protocol].trains_locally:
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

    result = run_decentralized(config, on_pair=report, overwrite=args.overwrite)
    print()
    print(markdown_tables(result), end="")
    if result.interrupted:
        print(f"interrupted: partial results written to {result.out_dir}", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"outputs written to {result.out_dir}")
    return EXIT_OK
