"""Attacking captured Flower updates: which ones, how, and the worker that runs them.

An attack that fails (bad settings for this update, a model the attack cannot handle, an
error inside it) is logged and recorded in its summary row; the Flower run goes on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import torch

from gradleak import attacks
from gradleak.attacks.engine.hooks import Observer, StopAttack
from gradleak.core.batch import PrivateBatch
from gradleak.core.errors import GradleakError
from gradleak.core.knowledge import Grants
from gradleak.integrations.flower.capture import Captured, CaptureFolder
from gradleak.integrations.flower.target import FlowerTarget
from gradleak.scenario.captured import attack_captured, refuse_model_modifying, write_captured

LOG = logging.getLogger("gradleak.flower")

# The evaluation side's source of truth: (round, node) → the private batch behind that
# update (normalised images and labels), or None where it is not known.
Truth = Callable[[int, int], "PrivateBatch | None"]


@dataclass(frozen=True)
class AttackPlan:
    """Which captured updates to attack, and with what.

    Args:
        attack: a gradleak attack name (`gradleak list`).
        options: the attack's settings to override (e.g. {"iterations": 2000}).
        rounds: the rounds to attack (None: every round).
        clients: at most this many clients per round, those of the lowest node ids (None:
            all).
        seed: seeds each attack's start.
        grants: what the threat model grants beyond the server's knowledge (default:
            nothing; the labels are not known).

    Raises:
        GradleakError: an unknown attack or option, or a bad round or client count.
    """

    attack: str = "ig"
    options: Mapping[str, Any] = field(default_factory=dict)
    rounds: Collection[int] | None = None
    clients: int | None = None
    seed: int = 0
    grants: Grants = field(default_factory=Grants)

    def __post_init__(self) -> None:
        # An unknown attack or option, or a malicious server's attack (the Flower server
        # sends its model unaltered), fails here, before the Flower run.
        refuse_model_modifying(self.build(), self.attack)
        if self.rounds is not None and any(int(r) < 1 for r in self.rounds):
            raise GradleakError(f"rounds start at 1; got {sorted(self.rounds)}")
        if self.clients is not None and self.clients < 1:
            raise GradleakError(f"clients must be at least 1 (or None for all), not {self.clients}")
        if self.grants.labels_known:
            raise GradleakError(
                "a Flower server is never told its clients' labels; attack without "
                "labels_known (label-recovering attacks read them from the update)"
            )

    def build(self) -> attacks.Attack:
        """A fresh attack as planned."""
        return attacks.get(self.attack).with_options(dict(self.options))

    def selects(self, server_round: int, position: int) -> bool:
        """Whether the `position`-th reply (from 0) of `server_round` is attacked."""
        if self.rounds is not None and server_round not in self.rounds:
            return False
        return self.clients is None or position < self.clients


def summary_row(item: Captured) -> dict[str, object]:
    """The summary row of a captured update before (or without) an attack."""
    return {
        "round": item.round,
        "node": item.node,
        "num_examples": item.num_samples,
        "attacked": False,
        "attack": "",
        "status": "captured",
        "psnr": None,
        "ssim": None,
        "label_accuracy": None,
        "recovered_labels": "",
        "true_labels": "",
        "seconds": None,
        "run_dir": "",
        "error": "",
        **{f"reply_{key}": value for key, value in item.reply_metrics.items()},
    }


def attack_one(
    folder: CaptureFolder,
    item: Captured,
    target: FlowerTarget,
    plan: AttackPlan,
    truth: Truth | None = None,
    stop: threading.Event | None = None,
) -> dict[str, object]:
    """Attack one captured update, write its run directory, and return its summary row.

    Never raises for a failed attack: the failure is logged and is the row's `error`.

    Args:
        folder: the capture folder.
        item: the update to attack.
        target: how the server reads its clients' updates.
        plan: the attack.
        truth: the evaluation side's source of the private batch (None: unscored).
        stop: once set, the attack ends at its next logged iteration and what it has is
            written (status `interrupted`); an attack not yet started is skipped.

    Returns:
        The row: status, scores (with the truth), seconds and the run directory.
    """
    row = summary_row(item) | {"attacked": True, "attack": plan.attack}
    if stop is not None and stop.is_set():
        return summary_row(item) | {"status": "cancelled"}
    try:
        update = target.read(folder.update(item), item.num_samples)
        view = target.view(folder.global_state(item), item.num_samples, grants=plan.grants)
        batch = None if truth is None else truth(item.round, item.node)
        outcome = attack_captured(
            view,
            update,
            plan.build(),
            name=plan.attack,
            seed=plan.seed,
            truth=batch,
            observer=None if stop is None else _stopping(stop),
        )
        settings = {
            "source": "flower",
            "round": item.round,
            "node": item.node,
            "attack": plan.attack,
            "attack_options": dict(plan.options),
            "protocol": target.protocol,
            "num_examples": item.num_samples,
            "update_file": item.update_file,
            "global_file": item.global_file,
        }
        run_dir = folder.attack_dir(item)
        metrics = write_captured(run_dir, outcome, settings, batch)
    except Exception as exc:  # noqa: BLE001 - any failure is this update's, not the run's
        LOG.error("gradleak: attack on %s failed: %s", item.name, exc, exc_info=exc)
        return row | {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
    true = "" if batch is None else " ".join(str(int(v)) for v in batch.labels)
    stopped = outcome.reconstruction.stopped and stop is not None and stop.is_set()
    return row | {
        "status": "interrupted" if stopped else metrics["status"],
        "psnr": metrics["psnr"],
        "ssim": metrics["ssim"],
        "label_accuracy": metrics["label_accuracy"],
        "recovered_labels": " ".join(str(v) for v in metrics["recovered_labels"]),
        "true_labels": true,
        "seconds": metrics["seconds"],
        "run_dir": str(run_dir.relative_to(folder.root)),
    }


def _stopping(stop: threading.Event) -> Observer:
    """An observer that ends the attack once `stop` is set (it reads no truth)."""

    def observe(iteration: int, losses: torch.Tensor, inputs: torch.Tensor) -> None:
        if stop.is_set():
            raise StopAttack(f"the Flower run was interrupted at iteration {iteration}")

    return observe


class AttackWorker:
    """Runs attacks one after another in a background thread, so rounds need not wait.

    Args:
        run: the job (`attack_one` with its folder, target, plan and truth bound); it is
            called with the update and the worker's stop event.
    """

    def __init__(self, run: Callable[..., dict[str, object]]) -> None:
        self._run = run
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gradleak-attack")
        self._jobs: list[tuple[Captured, Future[dict[str, object]]]] = []
        self._lock = threading.Lock()
        self.stop = threading.Event()

    def submit(self, item: Captured) -> None:
        with self._lock:
            self._jobs.append((item, self._pool.submit(self._run, item, stop=self.stop)))

    def rows(self) -> dict[tuple[int, int], dict[str, object]]:
        """The rows of the attacks that have ended, by (round, node)."""
        with self._lock:
            jobs = list(self._jobs)
        rows = {}
        for item, job in jobs:
            if job.cancelled():
                rows[(item.round, item.node)] = summary_row(item) | {"status": "cancelled"}
            elif job.done():
                rows[(item.round, item.node)] = job.result()
        return rows

    def finish(self, *, cancel: bool = False) -> bool:
        """Wait for the attacks to end; with `cancel` (or on Ctrl-C or SIGTERM while
        waiting) the running one stops at its next logged iteration and the queued ones
        are dropped.

        Returns:
            Whether an interrupt arrived while waiting (the caller writes what it has,
            then raises it again).
        """
        if cancel:
            self.stop.set()
        self._pool.shutdown(wait=False, cancel_futures=cancel)
        with self._lock:
            jobs = [job for _, job in self._jobs]
        interrupted = False
        while True:
            # `done()` counts a job cancelled before it started; `wait` would not.
            pending = [job for job in jobs if not job.done()]
            if not pending:
                return interrupted
            try:
                # A timed wait, so that the main thread still handles Ctrl-C and SIGTERM.
                wait(pending, timeout=0.5)
            except KeyboardInterrupt:
                interrupted = True
                self.stop.set()
                for job in jobs:
                    job.cancel()


def attack_selected(
    captured: list[Captured],
    plan: AttackPlan,
    job: Callable[..., dict[str, object]],
    stop: threading.Event,
) -> dict[tuple[int, int], dict[str, object]]:
    """Attack the updates `plan` selects, in turn; their rows by (round, node).

    Ctrl-C or SIGTERM during an attack ends it with what it has (the engine keeps it) and
    sets `stop`: the updates after it are not attacked.
    """
    rows = {}
    position: dict[int, int] = {}
    for item in captured:
        index = position.get(item.round, 0)
        position[item.round] = index + 1
        if plan.selects(item.round, index):
            row = job(item, stop=stop)
            rows[(item.round, item.node)] = row
            if row["status"] == "interrupted":
                stop.set()
    return rows


def capture_error_row(server_round: int, node: int, error: Exception) -> dict[str, object]:
    """The summary row of a reply that could not be captured."""
    return summary_row(Captured(server_round, node, 0, "", "", {})) | {
        "num_examples": None,
        "status": "capture-error",
        "error": f"{type(error).__name__}: {error}",
    }
