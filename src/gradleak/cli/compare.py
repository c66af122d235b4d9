"""The `gradleak compare` command: several attacks on the same images of several datasets."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gradleak.cli import flags
from gradleak.cli.exits import EXIT_INTERRUPTED, EXIT_OK
from gradleak.cli.overrides import ATTACK_OPTIONS, given
from gradleak.cli.values import IntList
from gradleak.core.files import check_out_dir, output_dir

if TYPE_CHECKING:
    from collections.abc import Mapping

    from gradleak.studies.compare import Cell, CompareSpec

DEFAULT_OUT = Path("bench") / "compare"

# The iterations a snapshot grid shows, sorted and unique.
parse_iterations = IntList(
    noun="iterations",
    example="1,10,30,100,300",
    invalid="{text}: give non-negative iterations, e.g. {example}",
    minimum=0,
    sort_unique=True,
)

# Flags that become RunConfig settings shared by every run (local-training ones reach only
# the runs whose protocol trains locally), in the order the summary lists them.
_SETTINGS = (
    "model",
    "model_args",
    "seed",
    "batch_size",
    "image_size",
    "model_mode",
    "local_steps",
    "local_lr",
    "admm_rho",
    "rounds",
    "guess_local_lr",
    "client_state_known",
    "task",
    "lengths_known",
)


def add_compare(commands: flags.Commands) -> None:
    """Register `gradleak compare` on the subcommands of `gradleak`."""
    p = commands.add_parser(
        "compare",
        description="Run each attack against its protocol's update on the same images of "
        "every --dataset, one run directory per dataset, image and attack under "
        "OUT/runs/. Writes OUT/results.csv (one row per run), summary.csv and summary.md "
        "(means per dataset and attack), grid-imageI.png (the reconstruction at the "
        "--snapshots iterations, truth last) and curves-DATASET.png (image MSE and matching "
        "loss per iteration). Finished runs are kept: the same command again runs only "
        "what is missing; a folder that holds anything but a comparison is refused unless "
        "--overwrite starts over. Ctrl-C (or SIGTERM) keeps the finished runs, draws the "
        "figures from them and exits with 130 (143).",
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
        help="repeatable: a dataset (cifar10, cifar100, mnist, folder, text) and its files, "
        "e.g. mnist=/data/mnist or folder=/data/lfw (an image folder is named after its "
        "folder); text attacks sentences: the bundled ones, or text=FILE with one per line "
        "(give text attacks in --runs, e.g. tokens span)",
    )
    flags.INDICES.add(
        p,
        default=[0],
        help="images (sentences) attacked, the same indices in every dataset; one run per "
        "index (default 0)",
    )
    p.add_argument(
        "--snapshots",
        type=parse_iterations,
        metavar="N,M,…",
        help="iterations shown in the grid (default 1,10,30,100,300; L-BFGS attacks are "
        "first observed after step 1; a run that stops earlier shows its final state)",
    )
    flags.MODEL.add(p, help="model of every run (default lenet; minilm for sentences)")
    flags.MODEL_ARG.add(p)
    flags.SEED.add(p, help="model init and attack start (0)")
    flags.BATCH_SIZE.add(p, help="private batch size (1)")
    flags.IMAGE_SIZE.add(p, help="side of folder images (32)")
    flags.MODEL_MODE.add(p, help="client batch-norm mode")
    flags.ITERATIONS.add(p, help="attack steps (presets' default)")
    g = p.add_argument_group(
        "local training", "for runs whose protocol trains locally (fedavg, fedadmm) only"
    )
    flags.add_protocol_flags(g, only=("--local-steps", "--local-lr", "--admm-rho", "--rounds"))
    flags.add_guess_flags(
        g,
        only=("--guess-local-lr", "--client-state-known"),
        helps={
            "--guess-local-lr": "threat model: the η the attacker believes (default: the true one)"
        },
    )
    flags.ADMM_READING.add(g)
    t = p.add_argument_group("text", "for runs on sentences (--dataset text) only")
    flags.add_flags(t, flags.TEXT_FLAGS, only=("--task", "--lengths-known"))
    flags.OUT.add(p, help=f"output folder (default {DEFAULT_OUT})")
    flags.OVERWRITE.add(
        p,
        help="start over: the new comparison replaces what --out holds (finished runs "
        "included) once it ends; without it a comparison's folder is resumed",
    )
    flags.THREADS.add(p)
    flags.DEVICE.add(p)
    flags.NO_PROGRESS.add(p, help="hide the progress bars")
    flags.NO_STACK.add(p)
    p.set_defaults(handler=handle)


def spec_from_args(args: argparse.Namespace) -> CompareSpec:
    """The comparison the flags describe (not yet checked).

    Args:
        args: the parsed flags of `gradleak compare`.

    Returns:
        The spec: default runs and snapshots where the flags give none.

    Raises:
        GradleakError: a --runs or --dataset entry that cannot be read.
    """
    from gradleak.studies.compare import (
        DEFAULT_RUNS,
        DEFAULT_SNAPSHOTS,
        CompareSpec,
        parse_attack_run,
        parse_dataset,
    )

    runs = DEFAULT_RUNS if args.runs is None else tuple(parse_attack_run(r) for r in args.runs)
    return CompareSpec(
        datasets=tuple(parse_dataset(d) for d in args.datasets),
        runs=runs,
        indices=tuple(args.indices),
        snapshots=args.snapshots or DEFAULT_SNAPSHOTS,
        settings=given(args, _SETTINGS),
        attack_options=given(args, ATTACK_OPTIONS),
    )


def handle(args: argparse.Namespace) -> int:
    """Run the comparison the flags describe; one line per run, then the summary table.

    Args:
        args: the parsed flags of `gradleak compare`.

    Returns:
        0, or 130 after Ctrl-C (143 after SIGTERM, `cli/app.py`) once the figures of the
        finished runs are drawn.

    Raises:
        GradleakError: bad runs, datasets, images, settings, --threads, --device or --out.
    """
    from gradleak.studies.compare import SPEC_FILE, run_compare  # heavy imports: when running

    flags.apply_threads(args.threads)
    device = str(flags.apply_device(args.device))
    out = args.out or DEFAULT_OUT
    # Before the images are read: a folder that cannot take the comparison costs nothing.
    check_out_dir(out, overwrite=args.overwrite, resumes=SPEC_FILE, what="comparison folder")
    spec = spec_from_args(args)
    spec.check()  # bad input is one line before the count of runs is announced
    total = len(spec.cells())
    done = 0

    def report(cell: Cell, metrics: Mapping[str, Any]) -> None:
        nonlocal done
        done += 1
        print(f"[{done}] {_line(cell, metrics)}", flush=True)

    print(f"{total} runs; outputs under {out}", flush=True)
    with output_dir(out, overwrite=args.overwrite, resumable=True) as folder:
        result = run_compare(
            spec,
            folder,
            progress=not args.no_progress,
            report=report,
            device=device,
            stack=not args.no_stack,
        )
    if result.removed_partial:
        print(f"removed {result.removed_partial} half-written run(s) left by an earlier call")
    if result.skipped:
        print(f"{result.skipped} run(s) already finished were kept")
    print((out / "summary.md").read_text(encoding="utf-8"), end="")
    print(f"tables: {out}/results.csv, {out}/summary.csv, {out}/summary.md")
    for path in result.figures:
        print(f"figure: {out / path.relative_to(folder)}")
    if result.interrupted:
        finished = len(result.rows)
        again = " without --overwrite" if args.overwrite else ""
        print(
            f"interrupted: {finished} of {total} runs finished; run the same command again"
            f"{again} to finish",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    return EXIT_OK


def _line(cell: Cell, metrics: Mapping[str, Any]) -> str:
    """One run's line: its modality's scores (images: PSNR, SSIM, MSE, label accuracy)."""
    from gradleak.modalities import get_modality
    from gradleak.report.tables import brief, score_format
    from gradleak.studies.summary import modality_of

    def shown(key: str) -> str:
        form = score_format(key)
        value = brief(metrics.get(key), key)
        unit = f" {form.unit}" if form.unit and value != "n/a" else ""
        return f"{form.label} {value}{unit}"

    scores = get_modality(modality_of(metrics)).scores
    status = metrics.get("status", "ok")
    flag = "" if status in ("ok", "interrupted") else f"{str(status).upper()}: "
    seconds = metrics.get("seconds")
    return (
        f"{cell.source.label} {cell.source.item} {cell.index}, {cell.run.label}: {flag}"
        f"{', '.join(shown(key) for key in scores)}, "
        f"{metrics.get('iterations')} iterations in "
        f"{'n/a' if seconds is None else format(seconds, '.1f')} s"
    )
