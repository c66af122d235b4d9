"""The `gradleak attack` command: attack one client update and score the reconstruction."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gradleak.attacks.registry import AttackChoices, spelled_attacks
from gradleak.cli import flags, values
from gradleak.cli.exits import EXIT_INTERRUPTED, EXIT_OK
from gradleak.cli.overrides import run_overrides
from gradleak.core.update import UpdateKind
from gradleak.defenses import available_defenses


def add_attack(commands: flags.Commands) -> None:
    """Register `gradleak attack` on the subcommands of `gradleak`."""
    attack_help = "; ".join(f"{name}: {text}" for name, text in spelled_attacks().items())
    p = commands.add_parser(
        "attack",
        description="Simulate a FedSGD client on a private batch, attack the gradient it "
        "shares and write metrics.json, reconstruction.png, grid.png, history.csv and "
        "config.yaml. With no arguments: DLG on LeNet against a bundled CIFAR-10 image. "
        "With --update FILE: attack an update captured anywhere instead of a simulated one.",
    )
    p.add_argument("--attack", choices=AttackChoices(), help=f"attack preset ({attack_help})")
    flags.add_model_and_data_flags(p)
    flags.add_text_flags(p.add_argument_group("text", "attack a language model's update"))
    flags.INDICES.add(
        p, help="image index; one start index for a batch, or one index per image (default 0)"
    )
    p.add_argument("--image", type=Path, metavar="PATH", help="attack this image file instead")
    p.add_argument("--label", type=int, metavar="L", help="label of --image (default 0)")
    p.add_argument("--num-classes", type=int, metavar="C", help="classes of the model's output")
    flags.IMAGE_SIZE.add(p, help="side that --image and folder/list/tensors images are resized to")
    flags.BATCH_SIZE.add(p, help="private samples per user (default 1)")
    flags.add_attack_tuning_flags(p)
    flags.ADMM_READING.add(p)
    flags.add_closed_form_flags(
        p.add_argument_group("closed-form batch attacks", "spear (honest server), imprint")
    )
    flags.LABELS_KNOWN.add(p, help="threat model: the attacker knows the true labels")
    flags.MALICIOUS_SERVER.add(p)
    flags.MODEL_MODE.add(p, help="client's batch-norm mode (default train)")
    flags.CHECKPOINT.add(p, help="server model state to load")
    flags.SEED.add(p, help="seed for model init and attack start")
    flags.OUT.add(p, help="run directory (default runs/NAME-DIGEST, named by the settings)")
    flags.OVERWRITE.add(p)
    flags.CONFIG.add(p)
    flags.THREADS.add(
        p,
        help="CPU threads for torch (default: torch's choice; 1 is as fast for lenet and "
        "much faster on a busy machine)",
    )
    flags.DEVICE.add(p)
    p.add_argument(
        "--compile",
        nargs="?",
        const=True,
        type=values.compile_setting,
        metavar="auto|on|off",
        help="torch.compile the matching step (faster per iteration once compiled; falls "
        "back with a notice where it cannot compile); auto: only when the run is long "
        "enough to repay the compile, judged from the eager step's time and earlier "
        "compiles (compiled steps are cached in $GRADLEAK_CACHE_DIR/compile, else "
        "$XDG_CACHE_HOME/gradleak/compile or ~/.cache/gradleak/compile); alone: on",
    )
    p.add_argument(
        "--budget",
        type=float,
        metavar="SECONDS",
        help="wall-time budget of the attack: an Adam attack is timed on a few steps and "
        "given the iterations (and restarts, once each gets enough) that fit, its step "
        "schedule laid over them; a deadline ends any attack when the budget is spent",
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
    flags.add_protocol_flags(
        p.add_argument_group(
            "protocol",
            "what the clients share: fedsgd (a gradient), fedavg (θ_local − θ_server after "
            "local SGD), fedadmm (the increment of x + π/ρ); --users N: the server sees only "
            "the mean",
        )
    )
    flags.add_guess_flags(
        p.add_argument_group(
            "attacker's guesses", "threat model: without these the attacker knows the settings"
        )
    )
    add_update_flags(
        p.add_argument_group(
            "captured update",
            "attack an update captured anywhere: a safetensors or torch file of named tensors "
            "(parameter name → tensor), or a client's local state with --update-base",
        )
    )
    flags.NO_PROGRESS.add(p)
    p.set_defaults(handler=handle)


def add_update_flags(p: flags.Flags) -> None:
    """--update, --update-base, --update-kind, --truth: attack a captured update."""
    p.add_argument(
        "--update",
        type=Path,
        metavar="FILE",
        help="the update: .safetensors (metadata may name kind and num_samples) or a "
        "tensors-only torch file (a dict of named tensors, or SharedUpdate.save's); with "
        "--update-base, the client's local state after training",
    )
    p.add_argument(
        "--update-base",
        type=Path,
        metavar="GLOBAL",
        help="the global state the client received: the update is FILE − GLOBAL (a weight "
        "difference of the parameters; FILE's buffers go along as the client's), and "
        "GLOBAL is the attacked model's weights (with --checkpoint too, both must hold "
        "the same weights)",
    )
    p.add_argument(
        "--update-kind",
        choices=tuple(kind.value for kind in UpdateKind),
        help="what the update is, for a file that does not say (default gradient; with "
        "--update-base weight_delta); a weight difference with --protocol fedsgd is read "
        "as the gradient −Δ/--local-lr",
    )
    p.add_argument(
        "--truth",
        type=Path,
        metavar="FILE",
        help="evaluation side: the private batch (a safetensors or torch file with images in "
        "[0, 1], B×C×H×W, and integer labels) to score the reconstruction against",
    )


def handle(args: argparse.Namespace) -> int:
    """Run the attack the flags (and --config) describe; print its scores.

    Args:
        args: the parsed flags of `gradleak attack`.

    Returns:
        0, or 130 after Ctrl-C (143 after SIGTERM, `cli/app.py`) once the partial results
        are written.

    Raises:
        GradleakError: bad settings, data or --threads.
    """
    from gradleak.cli.attack_update import refuse_update_only
    from gradleak.scenario.config import load_run_config
    from gradleak.scenario.run import run_attack

    if args.update is not None:
        return _handle_update(args)
    refuse_update_only(args)
    overrides = run_overrides(args)
    if args.budget is not None:
        overrides["budget"] = args.budget
    config = load_run_config(args.config, overrides)
    flags.apply_threads(args.threads)
    result = run_attack(config, overwrite=args.overwrite)
    m = result.metrics
    print(_scores(m))
    guessed = _guessed(m["threat_model"])
    if guessed:
        print(f"threat model: the attacker guessed {' and '.join(guessed)} (see config.yaml)")
    return _ended(
        result.out_dir, result.reconstruction.interrupted, result.interrupted_while_writing
    )


def _handle_update(args: argparse.Namespace) -> int:
    """Attack the captured update --update names; print its scores (if --truth) and where
    the run went.

    Raises:
        GradleakError: a flag that does not apply, an unreadable or mismatched file, bad
            settings (one line each, before the attack starts).
    """
    from gradleak.cli.attack_update import captured_request
    from gradleak.scenario.captured_run import run_captured

    request = captured_request(args)
    flags.apply_threads(args.threads)
    result = run_captured(request, overwrite=args.overwrite)
    print(_captured_scores(result.metrics))
    return _ended(
        result.out_dir, result.outcome.reconstruction.interrupted, result.interrupted_while_writing
    )


def _ended(out_dir: Path, interrupted: bool, interrupted_while_writing: bool) -> int:
    """Say where the run went (on stderr after an interrupt) and return the exit code."""
    if interrupted:
        print(f"interrupted: partial results written to {out_dir}", file=sys.stderr)
        return EXIT_INTERRUPTED
    if interrupted_while_writing:
        print(f"interrupted: the finished results were written to {out_dir}", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"outputs written to {out_dir}")
    return EXIT_OK


def _captured_scores(m: Mapping[str, Any]) -> str:
    """A captured run's result in a line: its scores against --truth, or that it has none."""
    scores = _quality(m) if m["scored"] else "unscored (no --truth)"
    return (
        f"{m['attack']} on {m['model']} ({m['source']}): {_status(m)}{scores}, "
        f"{m['iterations']} iterations in {m['seconds']:.1f} s"
    )


# What a status other than ok means for the scores printed after it.
STATUS_NOTES = {
    "diverged": "the scores are of the random start, not an attack result",
    "no-progress": "the scores are of a result no better than the random start",
    "interrupted": "the scores are of a partial result",
}


def _status(m: Mapping[str, Any]) -> str:
    """'DIVERGED (reason): what the scores are; ' for a run that is not ok, else ''."""
    status = m.get("status", "ok")
    if status == "ok":
        return ""
    reason = f" ({m['status_reason']})" if m.get("status_reason") else ""
    return f"{status.upper().replace('-', ' ')}{reason}: {STATUS_NOTES[status]}; "


def _scores(m: Mapping[str, Any]) -> str:
    """The run's scores in a line (text: then each sentence beside what was recovered)."""
    return SCORE_LINES[m.get("modality", "image")](m)


def _image_scores(m: Mapping[str, Any]) -> str:
    return (
        f"{m['attack']} on {m['model']} ({m['source']}): {_status(m)}{_quality(m)}, "
        f"{m['iterations']} iterations in {m['seconds']:.1f} s" + _compiling(m)
    )


def _quality(m: Mapping[str, Any]) -> str:
    """'PSNR 23.10 dB, SSIM 0.8123, MSE 0.0049, label accuracy 1.00' ('n/a' where unscored)."""
    ssim = "n/a" if m["ssim"] is None else f"{m['ssim']:.4f}"
    labels = "n/a" if m["label_accuracy"] is None else f"{m['label_accuracy']:.2f}"
    psnr = "n/a" if m["psnr"] is None else f"{m['psnr']:.2f}"
    line = f"PSNR {psnr} dB, SSIM {ssim}, MSE {m['mse']:.3g}, label accuracy {labels}"
    images = len(m.get("per_image") or ())
    if images > 1 and m.get("exact_fraction") is not None:
        # For a batch: how many images came back exactly (≥ 60 dB), beside the mean.
        line += f", {round(m['exact_fraction'] * images)} of {images} exact"
    return line


def _compiling(m: Mapping[str, Any]) -> str:
    """' (2.1 s compiling, 1 cached graph)' for a compiled run, else ''."""
    if not m["compiled"]:
        return ""
    hits = m.get("compile_cache_hits") or 0
    cached = f", {hits} cached graph{'s' if hits != 1 else ''}" if hits else ", cold cache"
    return f" ({m['compile_seconds']:.1f} s compiling{cached})"


def _text_scores(m: Mapping[str, Any]) -> str:
    labels = "n/a" if m["label_accuracy"] is None else f"{m['label_accuracy']:.2f}"
    head = (
        f"{m['attack']} on {m['model']} ({m['source']}): {_status(m)}"
        f"exact sequences {m['exact_match']:.2f}, token accuracy {m['token_accuracy']:.2f}, "
        f"token recall {m['token_recall']:.2f}, precision {m['token_precision']:.2f}, "
        f"ROUGE-1/2/L {m['rouge1']:.2f}/{m['rouge2']:.2f}/{m['rougeL']:.2f}, "
        f"label accuracy {labels}, {m['seconds']:.1f} s"
    )
    lines = [head]
    for item in m["per_sequence"]:
        mark = "=" if item["exact"] else "≠"
        lines.append(f"  {item['index']}  original:  {item['truth']}")
        lines.append(f"  {mark}  recovered: {item['recovered']}")
    return "\n".join(lines)


SCORE_LINES = {"image": _image_scores, "text": _text_scores}


def _guessed(threat: Mapping[str, Any]) -> list[str]:
    """What the attacker had to guess rather than know, as the run's threat model says."""
    return [
        what
        for what, flag in (
            ("the local training", threat.get("local_training_guessed")),
            ("the batch-norm mode", threat.get("model_mode_guessed")),
        )
        if flag
    ]
