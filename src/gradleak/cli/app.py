"""The `gradleak` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gradleak import __version__
from gradleak.attacks.registry import ATTACKS
from gradleak.cli.compare import add_compare
from gradleak.cli.flags import add_attack_tuning_flags, add_model_and_data_flags
from gradleak.cli.labels import add_labels
from gradleak.cli.simulate import add_simulate
from gradleak.cli.train import add_train
from gradleak.core.errors import GradleakError
from gradleak.defenses import available_defenses
from gradleak.models import available_models
from gradleak.scenario.config import DATASET_CHOICES, MODEL_MODES, PROTOCOLS, load_run_config

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse, but errors are one line with the usage hint, exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="gradleak",
        description="Measure how much private data leaks from shared gradients: simulate a "
        "client's update, attack it, and score the reconstruction.",
    )
    parser.add_argument("--version", action="version", version=f"gradleak {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _add_attack(commands)
    _add_sweep(commands)
    _add_report(commands)
    _add_bench(commands)
    _add_tradeoff(commands)
    add_train(commands)
    add_compare(commands)
    add_simulate(commands)
    add_labels(commands)
    listing = commands.add_parser("list", help="list attacks, models and datasets")
    listing.set_defaults(handler=_list)
    return parser


def _add_attack(commands: argparse._SubParsersAction) -> None:
    attack_help = "; ".join(f"{name}: {text}" for name, (_, text) in ATTACKS.items())
    p = commands.add_parser(
        "attack",
        help="attack one client update and score the reconstruction",
        description="Simulate a FedSGD client on a private batch, attack the gradient it "
        "shares and write metrics.json, reconstruction.png, grid.png, history.csv and "
        "config.yaml. With no arguments: DLG on LeNet against a bundled CIFAR-10 image.",
    )
    p.add_argument("--attack", choices=list(ATTACKS), help=f"attack preset ({attack_help})")
    add_model_and_data_flags(p)
    p.add_argument(
        "--index",
        dest="indices",
        type=int,
        nargs="+",
        metavar="I",
        help="image index; one start index for a batch, or one index per image (default 0)",
    )
    p.add_argument("--image", type=Path, metavar="PATH", help="attack this image file instead")
    p.add_argument("--label", type=int, metavar="L", help="label of --image (default 0)")
    p.add_argument("--num-classes", type=int, metavar="C", help="classes of the model's output")
    p.add_argument("--image-size", type=int, metavar="N", help="side of --image/folder images")
    p.add_argument(
        "--batch-size", type=int, metavar="B", help="private samples per user (default 1)"
    )
    add_attack_tuning_flags(p)
    p.add_argument(
        "--labels-known",
        action="store_true",
        default=None,
        help="threat model: the attacker knows the true labels",
    )
    p.add_argument(
        "--model-mode", choices=MODEL_MODES, help="client's batch-norm mode (default train)"
    )
    p.add_argument("--checkpoint", type=Path, metavar="CKPT", help="server model state to load")
    p.add_argument("--seed", type=int, metavar="S", help="seed for model init and attack start")
    p.add_argument("--out", type=Path, metavar="DIR", help="run directory (default runs/...)")
    p.add_argument("--config", type=Path, metavar="FILE", help="YAML/JSON file of run settings")
    p.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="CPU threads for torch (default: torch's choice; 1 is as fast for lenet and "
        "much faster on a busy machine)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        default=None,
        help="torch.compile the matching step (faster per iteration once compiled; falls "
        "back with a notice where it cannot compile)",
    )
    p.add_argument(
        "--stop-psnr",
        type=float,
        metavar="DB",
        help="evaluation side: stop once the reconstruction reaches this PSNR (measures "
        "time to quality; the attacker never sees the truth)",
    )
    p.add_argument(
        "--defense",
        dest="defenses",
        action="append",
        metavar="SPEC",
        help="client-side defense, repeatable, applied in order: "
        + "; ".join(available_defenses()),
    )
    _add_protocol_flags(p)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(handler=_attack)


def _add_protocol_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "protocol",
        "what the clients share: fedsgd (a gradient), fedavg (θ_local − θ_server after local "
        "SGD), fedadmm (the increment of x + π/ρ); --users N: the server sees only the mean",
    )
    g.add_argument("--protocol", choices=PROTOCOLS, help="the federated protocol (default fedsgd)")
    g.add_argument("--local-steps", type=int, metavar="S", help="local SGD steps (default 1)")
    g.add_argument("--local-epochs", type=int, metavar="E", help="local epochs instead of steps")
    g.add_argument(
        "--local-batch-size", type=int, metavar="b", help="local mini-batch (default: all n)"
    )
    g.add_argument("--local-lr", type=float, metavar="LR", help="local learning rate (0.01)")
    g.add_argument("--users", type=int, metavar="N", help="users aggregated by the server (1)")
    g.add_argument("--admm-rho", type=float, metavar="RHO", help="FedADMM penalty ρ (1.0)")
    g.add_argument("--rounds", type=int, metavar="R", help="attack round R's update (default 1)")
    g.add_argument(
        "--share-buffers",
        action="store_true",
        default=None,
        help="clients send their batch-norm running statistics with the update",
    )
    t = p.add_argument_group(
        "attacker's guesses", "threat model: without these the attacker knows the settings"
    )
    t.add_argument("--guess-local-steps", type=int, metavar="S")
    t.add_argument("--guess-local-epochs", type=int, metavar="E")
    t.add_argument("--guess-local-batch-size", type=int, metavar="b")
    t.add_argument("--guess-local-lr", type=float, metavar="LR")
    t.add_argument(
        "--attacker-model-mode",
        choices=MODEL_MODES,
        help="the batch-norm mode the attacker assumes (default: the client's)",
    )


def _add_execution_flags(p: argparse.ArgumentParser) -> None:
    """Where sweep cells run: --workers, --backend, --address, --threads, --no-progress."""
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
    p.add_argument(
        "--threads", type=int, metavar="N", help="torch threads per cell (default: cores/workers)"
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _add_sweep(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "sweep",
        help="run attacks × models × defenses × protocols × images × seeds, resumably",
        description="Run every cell of a sweep spec (YAML) into its own run directory; "
        "finished cells are skipped on a re-run. Writes results.csv, summary.csv and "
        "summary.md (and results.parquet with pyarrow).",
    )
    p.add_argument("spec", type=Path, metavar="SPEC.yaml")
    p.add_argument("--out", type=Path, metavar="DIR", help="sweep directory (default sweeps/NAME)")
    _add_execution_flags(p)
    p.set_defaults(handler=_sweep)


def _add_report(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "report",
        help="write report.html for a run or a sweep directory",
        description="Write a self-contained report.html: for a run, the reconstruction, "
        "snapshots over iterations, curves, metrics, threat model and configuration; for a "
        "sweep, the summary tables, a plot per swept axis and the best and worst cells.",
    )
    p.add_argument("path", type=Path, metavar="DIR")
    p.set_defaults(handler=_report)


def _add_bench(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "bench",
        help="run a named study that reproduces a published setting ('bench list')",
        description="Run a named study (a packaged sweep spec) at a chosen budget; its "
        "tables go to the output folder. 'gradleak bench list' names them.",
    )
    p.add_argument("name", metavar="NAME", help="a study name, or 'list'")
    p.add_argument("--count", type=int, metavar="N", help="number of images (from the first)")
    p.add_argument("--iterations", type=int, metavar="N", help="attack iterations per image")
    p.add_argument("--data-root", type=Path, metavar="DIR", help="folder with the dataset files")
    p.add_argument("--out", type=Path, metavar="DIR", help="output folder (default bench/NAME)")
    _add_execution_flags(p)
    p.set_defaults(handler=_bench)


def _add_tradeoff(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "tradeoff",
        help="attacks against defense strengths, beside the accuracy each defense costs",
        description="Run a trade-off spec (a sweep spec with a 'utility' mapping): the "
        "attacks against every defense setting, and one training run per setting for its "
        "test accuracy. Writes tradeoff.csv, tradeoff.md and tradeoff.png.",
    )
    p.add_argument("spec", type=Path, metavar="SPEC.yaml")
    p.add_argument("--out", type=Path, metavar="DIR", help="output folder (default sweeps/NAME)")
    _add_execution_flags(p)
    p.set_defaults(handler=_tradeoff)


_RUN_FLAGS = [
    "attack",
    "model",
    "dataset",
    "data_root",
    "split",
    "indices",
    "image",
    "label",
    "num_classes",
    "image_size",
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
]
_ATTACK_FLAGS = ("iterations", "restarts", "lr", "tv_weight", "label_strategy", "compile")


def _attack(args: argparse.Namespace) -> int:
    import torch  # heavy imports only when attacking

    from gradleak.scenario.run import run_attack

    overrides: dict[str, Any] = {k: getattr(args, k) for k in _RUN_FLAGS}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if args.defenses:
        overrides["defenses"] = args.defenses
    options = {k: getattr(args, k) for k in _ATTACK_FLAGS if getattr(args, k) is not None}
    overrides["attack_options"] = options
    if args.no_progress:
        overrides["progress"] = False
    config = load_run_config(args.config, overrides)
    if args.threads is not None:
        if args.threads < 1:
            raise GradleakError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    result = run_attack(config)
    m = result.metrics
    ssim = "n/a" if m["ssim"] is None else f"{m['ssim']:.4f}"
    labels = "n/a" if m["label_accuracy"] is None else f"{m['label_accuracy']:.2f}"
    print(
        f"{m['attack']} on {m['model']} ({m['source']}): PSNR {m['psnr']:.2f} dB, "
        f"SSIM {ssim}, MSE {m['mse']:.3g}, label accuracy {labels}, "
        f"{m['iterations']} iterations in {m['seconds']:.1f} s"
        + (f" ({m['compile_seconds']:.1f} s compiling)" if m["compiled"] else "")
    )
    threat = m["threat_model"]
    if threat.get("local_training_guessed") or threat.get("model_mode_guessed"):
        guessed = [
            what
            for what, flag in (
                ("the local training", threat.get("local_training_guessed")),
                ("the batch-norm mode", threat.get("model_mode_guessed")),
            )
            if flag
        ]
        print(f"threat model: the attacker guessed {' and '.join(guessed)} (see config.yaml)")
    if result.reconstruction.interrupted:
        print(f"interrupted: partial results written to {result.out_dir}", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"outputs written to {result.out_dir}")
    return 0


def _backend(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from gradleak.studies.sweep.backends import LocalBackend, RayBackend

    if args.threads is not None and args.threads < 1:
        raise GradleakError(f"--threads must be at least 1, got {args.threads}")
    if args.backend == "ray":
        return RayBackend(args.address, workers=args.workers)
    if args.address is not None:
        raise GradleakError("--address is for --backend ray; add --backend ray or drop it")
    return LocalBackend(args.workers)


def _run_study(spec, out: Path, args: argparse.Namespace) -> int:  # type: ignore[no-untyped-def]
    from gradleak.studies.sweep.runner import run_sweep

    with _backend(args) as backend:
        result = run_sweep(
            spec, out, backend=backend, progress=not args.no_progress, threads=args.threads
        )
    if result.removed_partial:
        print(
            f"removed {result.removed_partial} half-written cell director(ies) left by an "
            "earlier run; their cells run again"
        )
    print(
        f"{result.cells} cells: {result.ran} run now, {result.skipped} already done; "
        f"tables in {out}/summary.md, results.csv"
    )
    print((out / "summary.md").read_text(), end="")
    if result.interrupted:
        done = result.ran + result.skipped
        print(
            f"interrupted: {done} of {result.cells} cells done; run the same command again "
            "to finish",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from gradleak.studies.sweep.spec import read_spec

    spec = read_spec(args.spec)
    return _run_study(spec, args.out or Path("sweeps") / spec.name, args)


def _report(args: argparse.Namespace) -> int:
    from gradleak.report.html import write_report

    path = write_report(args.path)
    print(f"report written to {path}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from gradleak.studies.sweep.benches import BENCHES, load_bench

    if args.name == "list":
        for name, (_, text) in BENCHES.items():
            print(f"  {name:30} {text}")
        return 0
    spec = load_bench(
        args.name, count=args.count, iterations=args.iterations, data_root=args.data_root
    )
    return _run_study(spec, args.out or Path("bench") / args.name, args)


def _tradeoff(args: argparse.Namespace) -> int:
    from gradleak.studies.tradeoff import read_tradeoff, run_tradeoff

    spec = read_tradeoff(args.spec)
    out = args.out or Path("sweeps") / spec.sweep.name
    with _backend(args) as backend:
        _, interrupted = run_tradeoff(
            spec, out, backend=backend, progress=not args.no_progress, threads=args.threads
        )
    if interrupted:
        print("interrupted: run the same command again to finish", file=sys.stderr)
        return EXIT_INTERRUPTED
    print((out / "tradeoff.md").read_text(), end="")
    print(f"table and plot written to {out}/tradeoff.md, tradeoff.png")
    return 0


def _list(args: argparse.Namespace) -> int:
    print("attacks:")
    for name, (_, text) in ATTACKS.items():
        print(f"  {name:6} {text}")
    print(f"models:   {', '.join(available_models())}")
    print(f"datasets: {', '.join(DATASET_CHOICES)}")
    print("defenses:")
    for spelling in available_defenses():
        print(f"  {spelling}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.handler(args)
    except GradleakError as exc:
        print(f"gradleak: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("gradleak: interrupted before any result was produced", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
