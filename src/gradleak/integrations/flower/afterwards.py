"""Attack a capture folder after the Flower run, from its saved updates."""

from __future__ import annotations

import functools
import threading
from pathlib import Path

from gradleak.integrations.flower.capture import CaptureFolder
from gradleak.integrations.flower.target import FlowerTarget
from gradleak.integrations.flower.worker import (
    AttackPlan,
    Truth,
    attack_one,
    attack_selected,
    summary_row,
)


def attack_capture_folder(
    root: Path | str,
    target: FlowerTarget,
    plan: AttackPlan | None = None,
    truth: Truth | None = None,
) -> list[dict[str, object]]:
    """Attack the updates `plan` selects in a capture folder and rewrite its summary.

    Args:
        root: a folder a `CuriousStrategy` wrote.
        target: how the server reads its clients' updates (the run's).
        plan: which updates to attack and how (default: IG on every update).
        truth: the evaluation side's private batches (`TruthFolder`), to score them.

    Returns:
        One summary row per captured update; flower-summary.csv and .html are rewritten.

    Raises:
        GradleakError: a folder without a capture index.
        KeyboardInterrupt: Ctrl-C or SIGTERM ended an attack (the summary is written).
    """
    from gradleak.report.flower import write_flower_summary

    folder = CaptureFolder(Path(root))
    captured = folder.captured()
    plan = plan or AttackPlan()
    job = functools.partial(attack_one, folder, target=target, plan=plan, truth=truth)
    stop = threading.Event()
    attacked = attack_selected(captured, plan, job, stop)
    rows = [attacked.get((c.round, c.node)) or summary_row(c) for c in captured]
    write_flower_summary(folder.root, rows)
    if stop.is_set():  # Ctrl-C or SIGTERM ended an attack: its summary is written
        raise KeyboardInterrupt
    return rows
