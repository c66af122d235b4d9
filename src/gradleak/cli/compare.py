"""The `gradleak compare` subcommand: several attacks on the same images of several datasets."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gradleak.core.errors import GradleakError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from gradleak.studies.compare import Cell

EXIT_INTERRUPTED = 130
DEFAULT_OUT = Path("bench") / "compare"


def parse_iterations(text: str) -> tuple[int, ...]:
    """'1,10,30' → (1, 10, 30): the snapshot iterations, sorted and unique."""
    try:
        values = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of iterations, e.g. 1,10,30,100,300"
        ) from None
    if not values or values[0] < 0:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give non-negative iterations, e.g. 1,10,30,100,300"
        )
    return tuple(values)


# Flags that become RunConfig settings shared by every run (local-training ones reach only
# the runs whose protocol trains locally).
_SETTING_FLAGS = (
    "model",
    "seed",
    "batch_size",
    "image_size",
    "model_mode",
    "local_steps",
    "local_lr",
    "admm_rho",
    "rounds",
    "guess_local_lr",
)
_ATTACK_FLAGS = ("iterations",)


def add_compare(commands: argparse._SubParsersAction) -> None:
    """Register `gradleak compare` on the command's subparsers."""
    p = commands.add_parser(
        "compare",
        help="several attacks (default DLG, iDLG, DLG-ADMM, iDLG-ADMM) on the same images "
        "of several datasets: snapshot grids, convergence curves and tables",
        description="Run each attack against its protocol's update on the same images of "
        "every --dataset, one run directory per dataset, image and attack under "
        "OUT/runs/. Writes OUT/results.csv (one row per run), summary.csv and summary.md "
        "(means per dataset and attack), grid-imageI.png (the reconstruction at the "
        "--snapshots iterations, truth last) and curves-DATASET.png (image MSE and matching "
        "loss per iteration). Finished runs are kept: the same command again runs only "
        "what is missing. Ctrl-C keeps the finished runs, draws the figures from them and "
        "exits with 130.",
    )
    p.add_argument(
        "--runs",
        nargs="+",
        metavar="ATTACK[:PROTOCOL]",
        help="attacks and the protocol whose update each attacks (default: dlg:fedsgd "
        "idlg:fedsgd dlg-admm:fedadmm idlg-admm:fedadmm; the protocol defaults to fedadmm "
        "for -admm attacks, fedsgd otherwise)",
    )
    p.add_argument(
        "--dataset",
        dest="datasets",
        action="append",
        required=True,
        metavar="KIND[=ROOT]",
        help="repeatable: a dataset (cifar10, cifar100, mnist, folder) and its files, e.g. "
        "mnist=/data/mnist or folder=/data/lfw (an image folder is named after its folder)",
    )
    p.add_argument(
        "--index",
        dest="indices",
        type=int,
        nargs="+",
        default=[0],
        metavar="I",
        help="images attacked, the same indices in every dataset; one run per image (default 0)",
    )
    p.add_argument(
        "--snapshots",
        type=parse_iterations,
        metavar="N,M,…",
        help="iterations shown in the grid (default 1,10,30,100,300; L-BFGS attacks are "
        "first observed after step 1; a run that stops earlier shows its final state)",
    )
    p.add_argument("--model", metavar="NAME", help="model of every run (default lenet)")
    p.add_argument("--seed", type=int, metavar="S", help="model init and attack start (0)")
    p.add_argument("--batch-size", type=int, metavar="B", help="private batch size (1)")
    p.add_argument("--image-size", type=int, metavar="N", help="side of folder images (32)")
    p.add_argument("--model-mode", choices=("train", "eval"), help="client batch-norm mode")
    p.add_argument("--iterations", type=int, metavar="N", help="attack steps (presets' default)")
    g = p.add_argument_group(
        "local training", "for runs whose protocol trains locally (fedavg, fedadmm) only"
    )
    g.add_argument("--local-steps", type=int, metavar="S", help="local SGD steps (1)")
    g.add_argument("--local-lr", type=float, metavar="LR", help="local learning rate η (0.01)")
    g.add_argument("--admm-rho", type=float, metavar="RHO", help="FedADMM penalty ρ (1.0)")
    g.add_argument("--rounds", type=int, metavar="R", help="attack round R's update (1)")
    g.add_argument(
        "--guess-local-lr",
        type=float,
        metavar="LR",
        help="threat model: the η the attacker believes (default: the true one)",
    )
    p.add_argument("--out", type=Path, metavar="DIR", help=f"output folder (default {DEFAULT_OUT})")
    p.add_argument("--threads", type=int, metavar="N", help="CPU threads for torch")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.set_defaults(handler=run_compare_command)


def spec_from_args(args: argparse.Namespace):  # type: ignore[no-untyped-def]  # noqa: ANN201
    """The CompareSpec the flags describe."""
    from gradleak.studies.compare import (
        DEFAULT_RUNS,
        DEFAULT_SNAPSHOTS,
        CompareSpec,
        parse_attack_run,
        parse_dataset,
    )

    settings = {k: getattr(args, k) for k in _SETTING_FLAGS if getattr(args, k) is not None}
    options = {k: getattr(args, k) for k in _ATTACK_FLAGS if getattr(args, k) is not None}
    runs = DEFAULT_RUNS if args.runs is None else tuple(parse_attack_run(r) for r in args.runs)
    return CompareSpec(
        datasets=tuple(parse_dataset(d) for d in args.datasets),
        runs=runs,
        indices=tuple(args.indices),
        snapshots=args.snapshots or DEFAULT_SNAPSHOTS,
        settings=settings,
        attack_options=options,
    )


def run_compare_command(args: argparse.Namespace) -> int:
    """Run the comparison the flags describe; one line per run, then the summary table."""
    import torch  # heavy imports only when running

    from gradleak.studies.compare import run_compare

    if args.threads is not None:
        if args.threads < 1:
            raise GradleakError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    spec = spec_from_args(args)
    spec.check()  # bad input is one line before the count of runs is announced
    out = args.out or DEFAULT_OUT
    total = len(spec.cells())
    done = 0

    def report(cell: Cell, metrics: Mapping[str, Any]) -> None:
        nonlocal done
        done += 1
        print(f"[{done}] {_line(cell, metrics)}", flush=True)

    print(f"{total} runs; outputs under {out}", flush=True)
    result = run_compare(spec, out, progress=not args.no_progress, report=report)
    if result.removed_partial:
        print(f"removed {result.removed_partial} half-written run(s) left by an earlier call")
    if result.skipped:
        print(f"{result.skipped} run(s) already finished were kept")
    print((out / "summary.md").read_text(encoding="utf-8"), end="")
    print(f"tables: {out}/results.csv, {out}/summary.csv, {out}/summary.md")
    for path in result.figures:
        print(f"figure: {path}")
    if result.interrupted:
        finished = len(result.rows)
        print(
            f"interrupted: {finished} of {total} runs finished; run the same command again "
            "to finish",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    return 0


def _line(cell: Cell, metrics: Mapping[str, Any]) -> str:
    def fmt(key: str, spec: str) -> str:
        value = metrics.get(key)
        return "n/a" if value is None else format(value, spec)

    return (
        f"{cell.source.label} image {cell.index}, {cell.run.label}: PSNR {fmt('psnr', '.2f')} "
        f"dB, SSIM {fmt('ssim', '.3f')}, label accuracy {fmt('label_accuracy', '.2f')}, "
        f"{metrics.get('iterations')} iterations in {fmt('seconds', '.1f')} s"
    )
