"""A Flower server strategy that keeps every client's update and attacks the chosen ones.

`CuriousStrategy` wraps any strategy of Flower's Message API (`flwr.serverapp.strategy`):
it passes every call through unchanged, and on the way records the global model each
client receives (`configure_train`) and the model each client sends back
(`aggregate_train`). Their difference is the client's update; it is saved, and attacked
during the run in a background thread or afterwards. The wrapped strategy aggregates the
very messages it would have aggregated alone.
"""

from __future__ import annotations

import functools
import logging
import shutil
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from gradleak.core.errors import GradleakError
from gradleak.core.files import check_out_dir
from gradleak.core.signals import terminate_as_interrupt
from gradleak.integrations.flower._flwr import strategy_base
from gradleak.integrations.flower.capture import Captured, CaptureFolder
from gradleak.integrations.flower.messages import message_state, num_examples, reply_metrics
from gradleak.integrations.flower.target import FlowerTarget, weight_update
from gradleak.integrations.flower.worker import (
    AttackPlan,
    AttackWorker,
    Truth,
    attack_one,
    attack_selected,
    capture_error_row,
    summary_row,
)

LOG = logging.getLogger("gradleak.flower")

# When the chosen updates are attacked.
WHEN = ("during", "after", "never")


Strategy = strategy_base()


class CuriousStrategy(Strategy):
    """A Flower strategy that runs `strategy` unchanged and captures every client's update.

    Args:
        strategy: any Flower Message API strategy (e.g. `flwr.serverapp.strategy.FedAvg()`).
        target: how the server reads its clients' replies (`FlowerTarget`).
        out: the capture folder (see `capture.py` for its layout).
        plan: which updates to attack and how (`AttackPlan`; default IG on every client of
            every round).
        when: `during` (a background thread attacks as updates arrive), `after` (when the
            run ends) or `never` (capture only; `attack_capture_folder` attacks later).
        truth: the evaluation side's private batch of (round, node), to score the attacks.
        overwrite: empty a capture folder that holds files first; without it such a folder
            is refused, so two runs never mix in one folder.

    Raises:
        GradleakError: `strategy` is not a Flower strategy, a bad target or option, or an
            unusable capture folder.
    """

    def __init__(
        self,
        strategy: Any,
        target: FlowerTarget,
        out: Path | str,
        *,
        plan: AttackPlan | None = None,
        when: str = "during",
        truth: Truth | None = None,
        overwrite: bool = False,
    ) -> None:
        if not isinstance(strategy, Strategy):
            raise GradleakError(
                f"{type(strategy).__module__}.{type(strategy).__name__} is not a strategy of "
                "Flower's Message API; wrap an instance of flwr.serverapp.strategy.Strategy "
                "(e.g. flwr.serverapp.strategy.FedAvg())"
            )
        if type(strategy).start is not Strategy.start:
            raise GradleakError(
                f"{type(strategy).__name__} overrides Strategy.start, which the wrapper would "
                "skip (Flower's own start drives the rounds through it); wrap a strategy "
                "that keeps Flower's start"
            )
        if not isinstance(target, FlowerTarget):
            raise GradleakError(f"target must be a FlowerTarget, not {type(target).__name__}")
        if when not in WHEN:
            raise GradleakError(f"when={when!r} is not one of: {', '.join(WHEN)}")
        check_out_dir(Path(out), overwrite=overwrite, what="capture folder")
        if overwrite and Path(out).is_dir():
            shutil.rmtree(out)  # the earlier capture goes whole, as with a run's --overwrite
        self.strategy = strategy
        self.target = target
        self.folder = CaptureFolder(Path(out))
        self.plan = plan or AttackPlan()
        self.when = when
        self.truth = truth
        self.captured: list[Captured] = []
        self.rows: dict[tuple[int, int], dict[str, object]] = {}
        # The global model each node received, by round: configure_train records it.
        self._sent: dict[int, dict[int, str]] = {}
        self._states: dict[str, dict[str, torch.Tensor]] = {}
        self._job = functools.partial(
            attack_one, self.folder, target=target, plan=self.plan, truth=truth
        )
        self._worker = AttackWorker(self._job) if when == "during" else None
        self._finished: list[dict[str, object]] | None = None
        self._failures: list[dict[str, object]] = []  # replies that could not be captured
        self._started = False

    # --------------------------------------------------------------- passed through

    def __getattr__(self, name: str) -> Any:
        # Anything else (settings, helpers) is the wrapped strategy's.
        if name == "strategy":
            raise AttributeError(name)
        return getattr(self.strategy, name)

    def configure_train(self, server_round: int, arrays: Any, config: Any, grid: Any) -> Any:
        messages = list(self.strategy.configure_train(server_round, arrays, config, grid))
        try:
            self._record_sent(server_round, messages)
        except Exception as exc:  # noqa: BLE001 - capturing must never stop training
            LOG.error("gradleak: cannot record round %d's global model: %s", server_round, exc)
        return messages

    def aggregate_train(self, server_round: int, replies: Iterable[Any]) -> Any:
        replies = list(replies)  # read twice: once here, once by the wrapped strategy
        self._capture(server_round, replies)
        self._write_summary()  # after every round, so a killed run still has its summary
        return self.strategy.aggregate_train(server_round, replies)

    def configure_evaluate(self, server_round: int, arrays: Any, config: Any, grid: Any) -> Any:
        return self.strategy.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Any]) -> Any:
        return self.strategy.aggregate_evaluate(server_round, replies)

    def summary(self) -> None:
        LOG.info("gradleak: capturing updates into %s (attacks: %s)", self.folder.root, self.when)
        self.strategy.summary()

    def start(self, *args: Any, **kwargs: Any) -> Any:
        """Flower's `Strategy.start` over this wrapper, then `finish`.

        After an error, Ctrl-C or SIGTERM in the rounds, the running attack stops, the
        queued ones are dropped and the summary of what was captured is written before the
        exception goes on. A summary that cannot be written after a finished run is logged;
        Flower's result is returned all the same.

        Raises:
            GradleakError: the strategy has run once already (a capture folder holds one run).
        """
        if self._started:
            raise GradleakError(
                "this CuriousStrategy has run once; wrap the strategy anew for another run "
                "(a capture folder holds one run)"
            )
        self._started = True
        with terminate_as_interrupt():
            try:
                result = Strategy.start(self, *args, **kwargs)
            except BaseException:
                self._finish_quietly(cancel=True)
                raise
            try:
                self.finish()
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # noqa: BLE001 - the training itself has succeeded
                LOG.error("gradleak: the Flower run ended but its summary failed: %s", exc)
        return result

    def _finish_quietly(self, *, cancel: bool) -> None:
        """`finish` on the way out of an error, which must not be masked by another."""
        try:
            self.finish(cancel=cancel)
        except Exception as exc:  # noqa: BLE001 - the original error is the one raised
            LOG.error("gradleak: the summary after the error could not be written: %s", exc)

    # --------------------------------------------------------------- capturing

    def _record_sent(self, server_round: int, messages: list[Any]) -> None:
        files: dict[int, str] = {}
        saved: dict[int, str] = {}  # one file per distinct global model object
        for message in messages:
            # A message without the model under arrays_key raises here (logged once).
            state_of = message_state(message, self.target.arrays_key)
            record = message.content.array_records[self.target.arrays_key]
            if id(record) not in saved:
                state = state_of
                suffix = "" if not saved else f"-{len(saved)}"
                name = self.folder.save_global(server_round, state, suffix)
                saved[id(record)] = name
                self._states[name] = state
            files[int(message.metadata.dst_node_id)] = saved[id(record)]
        self._sent[server_round] = files
        # Only this round's global models are needed from here on.
        self._states = {name: self._states[name] for name in set(files.values())}

    def _capture(self, server_round: int, replies: list[Any]) -> None:
        sent = self._sent.get(server_round, {})
        position = 0
        # By node id, so that which clients are attacked and the summary's order do not
        # depend on the order replies arrived in (the wrapped strategy gets them as they came).
        for reply in sorted(replies, key=lambda r: int(r.metadata.src_node_id)):
            node = int(reply.metadata.src_node_id)
            try:
                if reply.has_error():
                    LOG.warning(
                        "gradleak: node %d replied with an error in round %d", node, server_round
                    )
                    continue
                item = self._save(server_round, node, reply, sent)
            except Exception as exc:  # noqa: BLE001 - capturing must never stop training
                LOG.error(
                    "gradleak: cannot capture node %d's update in round %d: %s",
                    node,
                    server_round,
                    exc,
                )
                self._failures.append(capture_error_row(server_round, node, exc))
                continue
            self.captured.append(item)
            if self.plan.selects(server_round, position) and self._worker is not None:
                self._worker.submit(item)
            position += 1

    def _save(self, server_round: int, node: int, reply: Any, sent: Mapping[int, str]) -> Captured:
        if node not in sent:
            raise GradleakError("no global model was recorded for this node")
        target = self.target
        metrics = reply_metrics(reply, target.metrics_key)
        samples = num_examples(reply, target)
        global_state = self._states[sent[node]]
        local_state = message_state(reply, target.arrays_key)
        # Checked against the architecture, without building a model for every reply.
        target.check_state(global_state)
        update = weight_update(
            global_state,
            local_state,
            target.parameter_names,
            {"num_samples": samples, "round": server_round, "node": str(node)},
        )
        return self.folder.save_update(server_round, node, update, sent[node], metrics)

    # --------------------------------------------------------------- results

    def finish(self, *, cancel: bool = False) -> list[dict[str, object]]:
        """Run what is left to attack, write flower-summary.csv and flower-summary.html.

        Args:
            cancel: stop the running attack and drop those not yet started (after an
                error or an interrupt).

        Returns:
            One row per captured update by round and node, then one per reply that could
            not be captured (a second call returns the first call's rows).

        Raises:
            KeyboardInterrupt: Ctrl-C or SIGTERM while attacks were still running (the
                summary of what was done is written first).
        """
        if self._finished is not None:
            return self._finished
        interrupted = False
        if self._worker is not None:
            interrupted = self._worker.finish(cancel=cancel)
        elif self.when == "after" and not cancel:
            stop = threading.Event()
            self.rows.update(attack_selected(self.captured, self.plan, self._job, stop))
            interrupted = stop.is_set()
        rows = self._write_summary()
        self._finished = rows
        if interrupted:
            raise KeyboardInterrupt
        return rows

    def _write_summary(self) -> list[dict[str, object]]:
        """Write the summary of what is captured and attacked so far; its rows."""
        from gradleak.report.flower import write_flower_summary

        if self._worker is not None:
            self.rows.update(self._worker.rows())
        rows = [self.rows.get((c.round, c.node)) or summary_row(c) for c in self.captured]
        rows += self._failures
        write_flower_summary(self.folder.root, rows)
        return rows
