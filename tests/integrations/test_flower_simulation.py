"""A real Flower simulation with a curious server: training is unchanged, every update is
captured, and an analytic attack on the captures recovers each client's image exactly.

One `run_simulation` serves the whole module: its server runs four strategies in turn on
the same two clients, so every strategy sees the very same updates (FedSGD, one image per
client and round, chosen by partition and round):

- `plain`: Flower's FedAvg alone;
- `during`, `after`, `never`: FedAvg wrapped by `CuriousStrategy`, attacking in a
  background thread, when the run ends, or not at all.
"""

from __future__ import annotations

import csv
import json
import shutil
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("flwr", reason="the Flower integration needs the extra gradleak[flower]")

from flwr.app import ArrayRecord, ConfigRecord, Context, Message  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402
from flwr.serverapp import Grid, ServerApp  # noqa: E402
from flwr.serverapp.strategy import FedAvg  # noqa: E402

from gradleak.cli import main as gradleak  # noqa: E402
from gradleak.core.update import SharedUpdate, UpdateKind  # noqa: E402
from gradleak.integrations.flower import (  # noqa: E402
    AttackPlan,
    CaptureFolder,
    CuriousStrategy,
    TruthFolder,
    attack_capture_folder,
)
from gradleak.report.flower import SUMMARY_CSV, SUMMARY_HTML  # noqa: E402

from . import flower_app  # noqa: E402
from .flower_app import DATASET, LR, net, pixels, reply, sgd_step, target  # noqa: E402
from .flower_app import private_batch as batch_for  # noqa: E402

# Ray's driver and workers talk over the loopback interface only.
pytestmark = [pytest.mark.enable_socket, pytest.mark.allow_hosts(["127.0.0.1"])]

ROUNDS = 2
CLIENTS = 2
MODES = ("during", "after", "never")
# What differs between two attacks of the same update: the time they took.
TIMING = ("seconds",)


def _client_app(truth: TruthFolder) -> ClientApp:
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        partition = int(context.node_config["partition-id"])
        server_round = int(msg.content["config"]["server-round"])
        batch = batch_for(partition, server_round)
        # The evaluation side's copy of the batch; the server's attacks never read it.
        truth.save(server_round, context.node_id, batch)
        state = msg.content["arrays"].to_torch_state_dict()
        local, loss = sgd_step(state, batch, float(msg.content["config"]["lr"]))
        return reply(msg, local, loss=loss, partition=partition)

    return app


def _server_app(out: Path, truth: TruthFolder, results: dict[str, Any]) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        start = ArrayRecord(net().state_dict())
        config = ConfigRecord({"lr": LR})
        plan = AttackPlan("analytic")
        results["initial"] = start.to_torch_state_dict()
        strategies: dict[str, Any] = {"plain": FedAvg(fraction_evaluate=0.0)}
        for when in MODES:
            strategies[when] = CuriousStrategy(
                FedAvg(fraction_evaluate=0.0),
                target(),
                out / when,
                plan=plan,
                when=when,
                truth=truth,
            )
        for name, strategy in strategies.items():
            result = strategy.start(
                grid=grid, initial_arrays=start, num_rounds=ROUNDS, train_config=config
            )
            results[name] = result.arrays.to_torch_state_dict()

    return app


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The simulation's results: final weights by strategy, and the capture folders."""
    ray = pytest.importorskip("ray")
    from flwr.simulation import run_simulation
    from flwr.supercore import telemetry

    out = tmp_path_factory.mktemp("flower")
    truth = flower_app.truth_folder(out / "truth")
    results: dict[str, Any] = {"out": out, "truth": truth}
    # Ray's workers cannot import the test modules (pytest imports them by path): the
    # client app travels with its code instead.
    modules = [sys.modules[__name__], flower_app]
    for module in modules:
        ray.cloudpickle.register_pickle_by_value(module)
    # Flower and Ray install their own SIGINT and SIGTERM handlers and leave them: the
    # tests after this one expect Python's (gradleak takes over only those).
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    with pytest.MonkeyPatch.context() as patch:
        # No usage report leaves the machine (Flower reads the switch when imported).
        patch.setenv("FLWR_TELEMETRY_ENABLED", "0")
        patch.setattr(telemetry, "FLWR_TELEMETRY_ENABLED", "0")
        try:
            run_simulation(
                server_app=_server_app(out, truth, results),
                client_app=_client_app(truth),
                num_supernodes=CLIENTS,
                backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
            )
            # Flower logs a client's failure and goes on: with no reply nothing trained.
            assert results.get("plain"), "the simulated clients failed; see the Flower log"
            yield results
        finally:
            for module in modules:
                ray.cloudpickle.unregister_pickle_by_value(module)
            if ray.is_initialized():
                ray.shutdown()
            for signum, handler in handlers.items():
                signal.signal(signum, handler)


def _rows(folder: Path) -> list[dict[str, str]]:
    with (folder / SUMMARY_CSV).open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def _partition(row: dict[str, str]) -> int:
    # The client reports its partition in its reply's metrics (floats in the summary).
    return int(float(row["reply_partition"]))


def _by_update(rows: list[dict[str, Any]]) -> dict[tuple[int, int], dict[str, str]]:
    return {
        (int(r["round"]), int(r["node"])): {k: str(v) for k, v in r.items() if k not in TIMING}
        for r in rows
    }


def _mean(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {n: sum(s[n].double() for s in states).div(len(states)).float() for n in states[0]}


def test_the_run_leaves_no_ray_behind(run: dict[str, Any]) -> None:
    import ray

    assert not ray.is_initialized()


def test_the_curious_server_trains_exactly_as_flower_alone(run: dict[str, Any]) -> None:
    plain = run["plain"]
    assert not all(torch.equal(plain[n], run["initial"][n]) for n in plain)  # it trained
    for mode in MODES:
        assert run[mode].keys() == plain.keys()
        assert all(torch.equal(run[mode][n], plain[n]) for n in plain), mode


def test_every_update_is_captured_and_recovered_exactly(run: dict[str, Any]) -> None:
    folder = run["out"] / "during"
    rows = _rows(folder)
    assert len(rows) == ROUNDS * CLIENTS
    assert {(int(r["round"]), _partition(r)) for r in rows} == {
        (r, p) for r in range(1, ROUNDS + 1) for p in range(CLIENTS)
    }
    assert len({r["node"] for r in rows}) == CLIENTS
    for row in rows:
        assert row["status"] == "ok" and row["attacked"] == "True"
        assert float(row["psnr"]) >= 60.0
        partition, server_round = _partition(row), int(row["round"])
        batch = batch_for(partition, server_round)
        assert row["true_labels"] == row["recovered_labels"] == str(int(batch.labels))
        recovered = torch.load(folder / row["run_dir"] / "reconstruction.pt", weights_only=True)
        torch.testing.assert_close(
            recovered["images"], pixels(partition, server_round), rtol=0, atol=1e-4
        )
        assert torch.equal(recovered["labels"], batch.labels)


def test_the_summary_page_shows_every_round(run: dict[str, Any]) -> None:
    page = (run["out"] / "during" / SUMMARY_HTML).read_text(encoding="utf-8")
    for row in _rows(run["out"] / "during"):
        assert row["node"] in page
    for server_round in range(1, ROUNDS + 1):
        assert f"<h2>Round {server_round}</h2>" in page
    # The PSNR-by-round plot, and each update's picture (originals above reconstructions).
    assert "the server&#39;s PSNR by round" in page
    assert page.count("data:image/png;base64,") == 1 + len(_rows(run["out"] / "during"))


def test_a_captured_update_is_the_clients_weight_difference(run: dict[str, Any]) -> None:
    """Replaying each client's step from the saved global model gives the saved update."""
    folder = CaptureFolder(run["out"] / "never")
    captured = folder.captured()
    assert len(captured) == ROUNDS * CLIENTS
    first = [sgd_step(run["initial"], batch_for(p, 1))[0] for p in range(CLIENTS)]
    for item in captured:
        global_state = run["initial"] if item.round == 1 else _mean(first)
        update = SharedUpdate.load(folder.root / item.update_file)
        assert update.kind is UpdateKind.WEIGHT_DELTA
        assert update.num_samples == item.num_samples == 1
        saved_global = folder.global_state(item)
        assert saved_global.keys() == global_state.keys()
        for name, expected in global_state.items():
            if item.round == 1:
                assert torch.equal(saved_global[name], expected), name
            else:  # FedAvg's mean of round 1's models, one example each
                torch.testing.assert_close(saved_global[name], expected, rtol=0, atol=1e-6)
        partition = int(item.reply_metrics["partition"])
        local, _ = sgd_step(saved_global, batch_for(partition, item.round))
        assert update.tensors.keys() == {n for n, _ in net().named_parameters()}
        for name, delta in update.tensors.items():
            expected = (local[name].double() - saved_global[name].double()).float()
            assert torch.equal(delta, expected), name


def test_capture_only_leaves_attacks_for_later(run: dict[str, Any]) -> None:
    folder = run["out"] / "never"
    rows = _rows(folder)
    assert len(rows) == ROUNDS * CLIENTS
    assert all(r["status"] == "captured" and r["attacked"] == "False" for r in rows)
    assert all(r["psnr"] == "" and r["run_dir"] == "" for r in rows)
    assert not list(folder.glob("round-*/node-*/attack"))


def test_attacking_afterwards_gives_the_rows_of_an_attack_during_the_run(
    run: dict[str, Any], tmp_path: Path
) -> None:
    copy = tmp_path / "never"
    shutil.copytree(run["out"] / "never", copy)
    rows = attack_capture_folder(copy, target(), AttackPlan("analytic"), truth=run["truth"])
    assert len(rows) == ROUNDS * CLIENTS
    assert _by_update(rows) == _by_update(_rows(copy))  # the summary was rewritten
    assert all(r["status"] == "ok" and float(r["psnr"]) >= 60.0 for r in _rows(copy))
    assert len(list(copy.glob("round-*/node-*/attack/metrics.json"))) == ROUNDS * CLIENTS
    during = _by_update(_rows(run["out"] / "during"))
    assert _by_update(_rows(copy)) == during
    assert _by_update(_rows(run["out"] / "after")) == during


def test_the_truth_folder_holds_the_clients_batches(run: dict[str, Any]) -> None:
    """Its files hold [0, 1] pixels; read back, they are the batches the clients held."""
    for row in _rows(run["out"] / "never"):
        server_round, node, partition = int(row["round"]), int(row["node"]), _partition(row)
        saved = torch.load(run["truth"].path(server_round, node), weights_only=True)
        torch.testing.assert_close(
            saved["images"], pixels(partition, server_round), rtol=0, atol=1e-6
        )
        batch, held = run["truth"](server_round, node), batch_for(partition, server_round)
        torch.testing.assert_close(batch.images, held.images, rtol=0, atol=1e-5)
        assert torch.equal(batch.labels, held.labels)


def test_a_captured_update_is_attacked_again_by_the_command_line(
    run: dict[str, Any], tmp_path: Path
) -> None:
    """`gradleak attack --update` on a capture and its truth file gives the run's result."""
    folder = run["out"] / "during"
    row = next(r for r in _rows(folder) if int(r["round"]) == 1)
    node = int(row["node"])
    out = tmp_path / "again"
    argv = [
        "attack",
        *("--update", str(folder / "round-001" / f"node-{node}" / "update.pt")),
        *("--checkpoint", str(folder / "round-001" / "global.pt")),
        *("--truth", str(run["truth"].path(1, node))),
        *("--dataset", DATASET, "--model", flower_app.MODEL, "--attack", "analytic"),
        *("--protocol", "fedsgd", "--local-lr", str(LR), "--no-progress", "--out", str(out)),
    ]
    assert gradleak(argv) == 0
    again = torch.load(out / "reconstruction.pt", weights_only=True)
    during = torch.load(folder / row["run_dir"] / "reconstruction.pt", weights_only=True)
    torch.testing.assert_close(again["images"], during["images"], rtol=0, atol=1e-5)
    assert torch.equal(again["labels"], during["labels"])
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["scored"] is True and metrics["psnr"] >= 60.0
