"""The `gradleak audit` command: does this federated setup leak its clients' data?"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gradleak.cli import flags
from gradleak.cli.exits import EXIT_INTERRUPTED, EXIT_OK
from gradleak.cli.overrides import run_overrides
from gradleak.defenses import available_defenses

# Exit code of an audit whose leakage exceeds a --fail-above limit (a CI gate's failure).
EXIT_LEAKS = 1
# --data of a language model that picks the bundled sentences.
BUNDLED_TEXT = "bundled"


def add_audit(commands: flags.Commands) -> None:
    """Register `gradleak audit` on the subcommands of `gradleak`."""
    from gradleak.studies.audit.selection import candidate_names
    from gradleak.studies.audit.settings import DEFAULT_SAMPLES, GATE_KEYS

    p = commands.add_parser(
        "audit",
        description="Simulate clients of your setup (model, data, protocol, defenses), run "
        "every attack that applies to it within the time budget (label recovery, analytic "
        "reconstruction where a Linear layer reads the input, DLG on small models, Inverting "
        "Gradients with the strongest prior, text attacks on language models), score what "
        "each recovers against the originals and the mean of the data's other images, and give a "
        "verdict. Writes OUT/audit.json, audit.md, audit.html and worst.png; prints the "
        "verdict table. With --fail-above it exits 1 when the leakage exceeds a limit.",
    )
    flags.MODEL.add(
        p,
        required=True,
        help="the model: a registry name, package.module:factory or path/file.py:factory",
    )
    flags.MODEL_ARG.add(p)
    p.add_argument(
        "--data",
        required=True,
        metavar="DATA",
        help="the clients' data: cifar10, cifar100 or mnist (files under --data-root; "
        "cifar10 without it: the bundled images), or a path: a folder of class sub-folders, "
        "a CSV/JSON list of (path, label), or a .npz/.pt tensor file; for a language model "
        f"(minilm, bert-tiny) a UTF-8 file of sentences, one per line, or {BUNDLED_TEXT}",
    )
    flags.DATA_ROOT.add(p, help="where a named dataset's files are")
    flags.SPLIT.add(p)
    flags.IMAGE_SIZE.add(p, help="side images are resized to (default: the model's input)")
    flags.NORMALIZE.add(p)
    flags.CHECKPOINT.add(p, help="the server model's state (default: its seeded initial state)")
    flags.BATCH_SIZE.add(p, default=1, help="private samples per client update (1)")
    flags.add_protocol_flags(
        p.add_argument_group("protocol", "what the clients share"),
        only=(
            "--protocol",
            "--local-steps",
            "--local-epochs",
            "--local-batch-size",
            "--local-lr",
            "--users",
            "--share-buffers",
        ),
    )
    p.add_argument(
        "--defense",
        dest="defenses",
        action="append",
        metavar="SPEC",
        help="client-side defense, repeatable: " + "; ".join(available_defenses()),
    )
    flags.MODEL_MODE.add(p, help="the clients' batch-norm mode (default train)")
    p.add_argument(
        "--budget",
        default="10m",
        metavar="TIME",
        help="time for the whole audit: seconds, or with s, m or h (default 10m)",
    )
    p.add_argument(
        "--samples",
        type=int,
        default=DEFAULT_SAMPLES,
        metavar="N",
        help=f"client updates attacked (default {DEFAULT_SAMPLES})",
    )
    p.add_argument(
        "--fail-above",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="exit 1 when the leakage score KEY exceeds VALUE, repeatable; keys: "
        + "; ".join(f"{k}: {v}" for k, v in GATE_KEYS.items()),
    )
    p.add_argument(
        "--prior",
        action="append",
        dest="audit_priors",
        metavar="SPEC",
        help="image prior for Inverting Gradients, repeatable (default: batch-norm statistics "
        "where the model has batch norm, else total variation; see gradleak list)",
    )
    p.add_argument(
        "--attacks",
        type=_names,
        default=(),
        metavar="A,A",
        help="only these attacks (default: every one that applies): "
        + ", ".join(candidate_names()),
    )
    flags.ITERATIONS.add(
        p,
        help="every optimisation attack's iterations (default: what the budget fits); fixed "
        "iterations give the same scores run after run, for CI gates",
    )
    flags.SEED.add(p, help="model init, the clients' noise and the attacks' starts (0)")
    flags.OUT.add(p, required=True, help="output folder")
    flags.OVERWRITE.add(p)
    flags.DEVICE.add(p)
    flags.THREADS.add(p)
    flags.NO_PROGRESS.add(p)
    p.set_defaults(handler=handle)


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _text_settings(data: str, root: Path | None) -> dict[str, object]:
    """--data of a language model: the bundled sentences, or a file of one per line."""
    from gradleak.core.errors import GradleakError

    if root is not None:
        raise GradleakError("--data-root is for image datasets; give the text file as --data")
    settings: dict[str, object] = {"modality": "text"}
    if data != BUNDLED_TEXT:
        settings["text_file"] = Path(data)
    return settings


def _data_settings(data: str, root: Path | None) -> dict[str, object]:
    """--data as run settings: a named dataset, or the kind of data a path holds."""
    from gradleak.core.errors import GradleakError
    from gradleak.data.loading import FILE_DATASETS, infer_dataset
    from gradleak.scenario.config import DATASET_CHOICES

    # A dataset's name, or else a path to the user's own data.
    named = [name for name in DATASET_CHOICES if name not in FILE_DATASETS]
    if data.lower() in named:
        return {"dataset": data.lower(), "data_root": root}
    if root is not None:
        raise GradleakError(
            f"--data-root is for a named dataset ({', '.join(named)}); --data {data} is a "
            "path already: drop --data-root"
        )
    path = Path(data)
    return {"dataset": infer_dataset(path), "data_root": path}


def settings_from(args: argparse.Namespace):  # noqa: ANN201 - AuditSettings, imported late
    """The audit's settings from its flags, checked (no data read yet).

    Raises:
        GradleakError: a bad budget, --fail-above rule, prior, data path or run setting.
    """
    from gradleak.core.errors import GradleakError
    from gradleak.models.text import is_text_model
    from gradleak.scenario.config import RunConfig
    from gradleak.studies.audit.runner import STAND_IN
    from gradleak.studies.audit.settings import AuditSettings, parse_budget, parse_gate

    budget = parse_budget(args.budget)
    gates = tuple(parse_gate(text) for text in args.fail_above)
    priors = tuple(args.audit_priors or ())
    overrides = run_overrides(args)
    overrides.pop("attack_options", None)  # the audit sets each attack's options
    overrides.pop("progress", None)
    overrides.pop("out", None)
    # The run's own attack is a stand-in: the audit chooses its attacks per candidate.
    if is_text_model(args.model):
        overrides.update(_text_settings(args.data, args.data_root), attack=STAND_IN["text"])
    else:
        overrides.update(_data_settings(args.data, args.data_root), attack=STAND_IN["image"])
    try:
        run = RunConfig(**overrides)
    except TypeError as exc:  # a flag without a RunConfig field: a bug, not bad input
        raise GradleakError(f"audit settings: {exc}") from exc
    return AuditSettings(
        run=run,
        budget=budget,
        samples=args.samples,
        gates=gates,
        priors=priors,
        attacks=args.attacks,
        iterations=args.iterations,
        out=args.out,
        progress=not args.no_progress,
    ).validate()


def handle(args: argparse.Namespace) -> int:
    """Run the audit, write its files and print the verdict table.

    Args:
        args: the parsed flags of `gradleak audit`.

    Returns:
        0 when every --fail-above limit holds, 1 when one is exceeded, 130 after Ctrl-C
        (143 after SIGTERM) once what was attacked is written.

    Raises:
        GradleakError: bad settings, data, model or device, or a budget too small to attack
            anything, before any attack runs.
    """
    from gradleak.core.files import check_out_dir, output_dir
    from gradleak.core.signals import hold_interrupts, release_interrupts
    from gradleak.report.audit import markdown_table, verdict_lines, write_audit
    from gradleak.studies.audit import run_audit

    settings = settings_from(args)
    check_out_dir(args.out, overwrite=args.overwrite, what="output folder")
    flags.apply_threads(args.threads)
    result = run_audit(settings)
    hold_interrupts()  # the audit is done: an interrupt now waits until its files are written
    try:
        with output_dir(args.out, overwrite=args.overwrite) as folder:
            write_audit(result, folder)
    finally:
        held = release_interrupts()
    print(result.description)
    print(markdown_table(result), end="")
    for line in verdict_lines(result):
        print(line)
    print(f"audit written to {args.out} ({result.seconds:.0f} s)")
    if result.interrupted or held:
        print(f"interrupted: what was attacked is written to {args.out}", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK if result.verdict.passed else EXIT_LEAKS
