"""Bad input to the Flower integration: one-line errors before a run, and failures inside a
run that are logged and recorded while training goes on.

The runs here use an in-process grid (`LocalGrid`) in place of Flower's simulation: the
strategies see real Flower messages, and no network is involved.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("flwr", reason="the Flower integration needs the extra gradleak[flower]")

from flwr.app import ArrayRecord, ConfigRecord, Error, Message, MessageType  # noqa: E402
from flwr.serverapp.strategy import FedAvg  # noqa: E402

from gradleak.core.errors import GradleakError  # noqa: E402
from gradleak.core.knowledge import Grants  # noqa: E402
from gradleak.integrations.flower import (  # noqa: E402
    AttackPlan,
    CuriousStrategy,
    FlowerTarget,
    LeakageGuard,
    attack_capture_folder,
)
from gradleak.models import build_model  # noqa: E402
from gradleak.report.flower import SUMMARY_CSV  # noqa: E402

from .flower_app import (  # noqa: E402
    LR,
    LocalGrid,
    batch_of,
    context,
    metadata,
    net,
    reply,
    server_identity,
    sgd_step,
    target,
)

PARTITIONS = {11: 0, 12: 1}
ROUNDS = 2


def _legacy_strategy() -> Any:
    from flwr.server.strategy import FedAvg as LegacyFedAvg

    return LegacyFedAvg()


BAD_INPUT: dict[str, tuple[Callable[[Path], object], str]] = {
    "not a strategy": (
        lambda out: CuriousStrategy(object(), target(), out),
        "builtins.object is not a strategy of Flower's Message API",
    ),
    "a strategy of the old API": (
        lambda out: CuriousStrategy(_legacy_strategy(), target(), out),
        "wrap an instance of flwr.serverapp.strategy.Strategy",
    ),
    "not a target": (
        lambda out: CuriousStrategy(FedAvg(), "mnist", out),
        "target must be a FlowerTarget",
    ),
    "unknown when": (
        lambda out: CuriousStrategy(FedAvg(), target(), out, when="sometimes"),
        "when='sometimes' is not one of",
    ),
    "unknown protocol": (
        lambda out: target(protocol="fedadmm"),
        "read as fedsgd or fedavg, not 'fedadmm'",
    ),
    "no learning rate": (lambda out: target(lr=0.0), "lr must be the clients' learning rate"),
    "bad local training": (
        lambda out: target(protocol="fedavg", local_steps=0),
        "local steps must be at least 1",
    ),
    "not a model": (
        lambda out: FlowerTarget.for_dataset("mnist", model=42),  # type: ignore[arg-type]
        "model must be a torch module or a factory",
    ),
    "unknown dataset": (
        lambda out: FlowerTarget.for_dataset("nope", model=net),
        "unknown dataset 'nope'",
    ),
    "unknown attack": (lambda out: AttackPlan("nope"), "unknown attack 'nope'"),
    "unknown attack option": (
        lambda out: AttackPlan("ig", options={"nope": 1}),
        "unknown key 'nope' in attack 'ig' options",
    ),
    "labels granted": (
        lambda out: AttackPlan(grants=Grants(labels_known=True)),
        "never told its clients' labels",
    ),
    "round 0": (lambda out: AttackPlan(rounds=[0]), "rounds start at 1"),
    "no clients": (lambda out: AttackPlan(clients=0), "clients must be at least 1"),
    "guard without defense": (
        lambda out: LeakageGuard(target(), batch_of, defenses=()),
        "a guard needs at least one defense",
    ),
    "guard with an unknown defense": (
        lambda out: LeakageGuard(target(), batch_of, defenses=("nope",)),
        "unknown defense 'nope'",
    ),
    "guard without a batch": (
        lambda out: LeakageGuard(target(), 3),  # type: ignore[arg-type]
        "private_batch must be a function",
    ),
    "a capture folder of an earlier run": (
        lambda out: (
            (out / "captures.jsonl").write_text("{}\n"),
            CuriousStrategy(FedAvg(), target(), out),
        ),
        "already holds files",
    ),
    "no capture folder": (
        lambda out: attack_capture_folder(out, target()),
        "holds no captures.jsonl",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_one_line(case: str, tmp_path: Path) -> None:
    make, fragment = BAD_INPUT[case]
    with pytest.raises(GradleakError) as raised:
        make(tmp_path)
    message = str(raised.value)
    assert fragment in message
    assert "\n" not in message


def _start(strategy: Any, grid: LocalGrid) -> dict[str, torch.Tensor]:
    """Run `strategy` for `ROUNDS` rounds on `grid`; the final global model."""
    with server_identity():
        result = strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord(net().state_dict()),
            num_rounds=ROUNDS,
            train_config=ConfigRecord({"lr": LR}),
        )
    return dict(result.arrays.to_torch_state_dict())


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)


def _rows(folder: Path) -> list[dict[str, str]]:
    with (folder / SUMMARY_CSV).open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def flower_alone() -> dict[str, torch.Tensor]:
    """The final global model of FedAvg alone on the local grid."""
    return _start(FedAvg(fraction_evaluate=0.0), LocalGrid(PARTITIONS))


def _delivered(sent: Message) -> Message:
    """`sent` as its node receives it (the metadata a delivered message has)."""
    return Message(sent.content, metadata=metadata(sent.metadata.dst_node_id, MessageType.TRAIN))


def _trained(sent: Message) -> dict[str, torch.Tensor]:
    """The model the node `sent` goes to trains from it."""
    node = int(sent.metadata.dst_node_id)
    msg = _delivered(sent)
    state = msg.content["arrays"].to_torch_state_dict()
    return sgd_step(state, batch_of(msg, context(node, PARTITIONS.get(node, 0))))[0]


def _one_node_fedavg() -> FedAvg:
    return FedAvg(fraction_evaluate=0.0, min_train_nodes=1, min_available_nodes=1)


def test_a_failing_attack_is_recorded_and_the_run_finishes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, flower_alone: dict[str, torch.Tensor]
) -> None:
    caplog.set_level(logging.ERROR, logger="gradleak.flower")
    # R-GAP refuses an MLP: every attack fails inside the run, in the background thread.
    strategy = CuriousStrategy(
        FedAvg(fraction_evaluate=0.0), target(), tmp_path, plan=AttackPlan("rgap")
    )
    assert _same(_start(strategy, LocalGrid(PARTITIONS)), flower_alone)
    rows = _rows(tmp_path)
    assert len(rows) == ROUNDS * len(PARTITIONS)
    for row in rows:
        assert row["status"] == "error" and row["attacked"] == "True"
        assert row["error"].startswith("GradleakError: R-GAP cannot attack MLP")
        assert row["psnr"] == "" and row["run_dir"] == ""
    failures = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert sorted(failures) == sorted(
        f"gradleak: attack on round {row['round']}, node {row['node']} failed: "
        + row["error"].removeprefix("GradleakError: ")
        for row in rows
    )
    # The updates were captured all the same: they can be attacked again afterwards.
    assert len(list(tmp_path.glob("round-*/node-*/update.pt"))) == len(rows)


def test_a_target_that_does_not_fit_the_clients_model_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, flower_alone: dict[str, torch.Tensor]
) -> None:
    caplog.set_level(logging.ERROR, logger="gradleak.flower")

    def other() -> torch.nn.Module:
        return build_model("mlp1-32", num_classes=10, in_channels=1, image_size=(28, 28))

    wrong = FlowerTarget.for_dataset("mnist", model=other, lr=LR)
    strategy = CuriousStrategy(FedAvg(fraction_evaluate=0.0), wrong, tmp_path, when="after")
    assert _same(_start(strategy, LocalGrid(PARTITIONS)), flower_alone)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == ROUNDS * len(PARTITIONS)
    assert all("give FlowerTarget the architecture the clients train" in e for e in errors)
    # Nothing could be read as an update: each reply is a row that says why.
    rows = _rows(tmp_path)
    assert len(rows) == ROUNDS * len(PARTITIONS)
    assert {r["status"] for r in rows} == {"capture-error"}
    assert all("give FlowerTarget the architecture" in r["error"] for r in rows)


# Replies that are valid Flower replies but not the global model trained: what each does
# to the trained state.
PROBLEMS: dict[str, Callable[[dict[str, torch.Tensor]], None]] = {
    "an extra array": lambda state: state.update(extra=torch.zeros(3)),
    "a missing array": lambda state: state.__delitem__("classifier.bias"),
    "a wrong shape": lambda state: state.update({"classifier.bias": torch.zeros(3)}),
}


def _with(state: dict[str, torch.Tensor], problem: str) -> dict[str, torch.Tensor]:
    state = dict(state)
    PROBLEMS[problem](state)
    return state


@pytest.mark.parametrize("problem", list(PROBLEMS))
def test_a_reply_that_does_not_fit_the_global_model_is_logged(
    problem: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="gradleak.flower")
    strategy = CuriousStrategy(_one_node_fedavg(), target(), tmp_path, when="never")
    alone = _one_node_fedavg()
    grid = LocalGrid({11: 0})
    start = ArrayRecord(net().state_dict())
    with server_identity():
        (msg,) = strategy.configure_train(1, start, ConfigRecord({"lr": LR}), grid)
        bad = reply(_delivered(msg), _with(_trained(msg), problem))
        # The wrapped strategy aggregates what it would have aggregated alone.
        arrays, _ = strategy.aggregate_train(1, [bad])
        expected, _ = alone.aggregate_train(1, [bad])
        assert _same(dict(arrays.to_torch_state_dict()), dict(expected.to_torch_state_dict()))
        assert strategy.captured == []
        (error,) = [r.getMessage() for r in caplog.records]
        assert error.startswith("gradleak: cannot capture node 11's update in round 1")
        # The next round goes on, and its update is captured.
        (msg,) = strategy.configure_train(2, start, ConfigRecord({"lr": LR}), grid)
        strategy.aggregate_train(2, [reply(_delivered(msg), _trained(msg))])
    assert [(c.round, c.node) for c in strategy.captured] == [(2, 11)]


def test_error_replies_and_unknown_nodes_are_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gradleak.flower")
    strategy = CuriousStrategy(FedAvg(fraction_evaluate=0.0), target(), tmp_path, when="never")
    grid = LocalGrid(PARTITIONS)
    with server_identity():
        first, second = strategy.configure_train(
            1, ArrayRecord(net().state_dict()), ConfigRecord({"lr": LR}), grid
        )
        failed = Message(Error(code=0, reason="the client crashed"), reply_to=_delivered(first))
        good = reply(_delivered(second), _trained(second))
        strategy.aggregate_train(1, [failed, good])
        # A reply in a round the strategy sent nothing in.
        strategy.aggregate_train(3, [good])
    node = int(second.metadata.dst_node_id)
    assert [(c.round, c.node) for c in strategy.captured] == [(1, node)]
    messages = [r.getMessage() for r in caplog.records]
    assert any("replied with an error in round 1" in m for m in messages)
    assert any("no global model was recorded for this node" in m for m in messages)


def test_overwrite_replaces_an_earlier_capture_whole(tmp_path: Path) -> None:
    (tmp_path / "round-001").mkdir()
    (tmp_path / "round-001" / "stale.pt").write_bytes(b"old")
    CuriousStrategy(FedAvg(), target(), tmp_path, overwrite=True)
    assert not (tmp_path / "round-001" / "stale.pt").exists()


class _OwnStart(FedAvg):
    def start(self, *args: Any, **kwargs: Any) -> Any:  # a strategy that drives itself
        return super().start(*args, **kwargs)


def test_a_strategy_with_its_own_start_is_refused(tmp_path: Path) -> None:
    with pytest.raises(GradleakError, match="overrides Strategy.start"):
        CuriousStrategy(_OwnStart(), target(), tmp_path)


def test_a_second_start_is_refused(tmp_path: Path) -> None:
    strategy = CuriousStrategy(FedAvg(fraction_evaluate=0.0), target(), tmp_path, when="never")
    _start(strategy, LocalGrid(PARTITIONS))
    with pytest.raises(GradleakError, match="has run once"):
        _start(strategy, LocalGrid(PARTITIONS))


def test_the_summary_is_written_after_every_round(tmp_path: Path) -> None:
    strategy = CuriousStrategy(FedAvg(fraction_evaluate=0.0), target(), tmp_path, when="never")
    grid = LocalGrid(PARTITIONS)
    with server_identity():
        sent = strategy.configure_train(
            1, ArrayRecord(net().state_dict()), ConfigRecord({"lr": LR}), grid
        )
        strategy.aggregate_train(1, [reply(_delivered(m), _trained(m)) for m in sent])
    # Before the run ends: a killed server still leaves what it captured.
    rows = _rows(tmp_path)
    assert [(r["round"], r["status"]) for r in rows] == [("1", "captured")] * len(PARTITIONS)


def test_cancelling_stops_the_running_attack_and_drops_the_queued_ones(tmp_path: Path) -> None:
    # An attack far longer than any test: only the stop can end it.
    plan = AttackPlan("ig", options={"iterations": 10_000_000, "restarts": 1, "log_every": 10})
    strategy = CuriousStrategy(FedAvg(fraction_evaluate=0.0), target(), tmp_path, plan=plan)
    grid = LocalGrid(PARTITIONS)
    with server_identity():
        sent = strategy.configure_train(
            1, ArrayRecord(net().state_dict()), ConfigRecord({"lr": LR}), grid
        )
        strategy.aggregate_train(1, [reply(_delivered(m), _trained(m)) for m in sent])
    rows = strategy.finish(cancel=True)
    statuses = sorted(str(r["status"]) for r in rows)
    # The first attack started and was stopped (its partial result is written); the
    # second never started, or was stopped as it began.
    assert statuses[-1] in ("cancelled", "interrupted")
    assert set(statuses) <= {"cancelled", "interrupted"}
    for row in rows:
        if row["status"] == "interrupted":
            assert (tmp_path / str(row["run_dir"]) / "metrics.json").is_file()
