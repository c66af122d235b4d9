"""The demo's Flower apps: clients that train on their own images, a curious server.

The client is a plain Flower `ClientApp` (Message API): it loads the global model, trains
on its batch of the round as the train config says, and replies with its model and its
number of examples. Two lines are there for the demo only: it keeps its batch in a
`TruthFolder` (the evaluation side's copy, which scores the server's reconstructions; no
attack reads it), and with `--guard` a `LeakageGuard` mod checks its reply before it leaves.

The server is Flower's `FedAvg` inside gradleak's `CuriousStrategy`, which captures every
update and attacks it in a background thread while the rounds go on.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from torch.nn import functional as F

from fldemo.data import ClientData
from fldemo.settings import Demo, local_training
from gradleak.core.batch import PrivateBatch
from gradleak.fl.local_training import local_sgd
from gradleak.integrations.flower import AttackPlan, CuriousStrategy, LeakageGuard, TruthFolder

# The server's held-out evaluation: (round, global arrays) → metrics (Flower's evaluate_fn).
Evaluate = Callable[[int, ArrayRecord], MetricRecord]


class BatchOf:
    """The guard's view of a client's private batch: (message, context) → batch."""

    def __init__(self, data: ClientData) -> None:
        self.data = data

    def __call__(self, msg: Message, context: Context) -> PrivateBatch:
        server_round = int(msg.content["config"]["server-round"])
        return self.data.batch(int(context.node_config["partition-id"]), server_round)


def client_data(demo: Demo) -> ClientData:
    return ClientData(demo.dataset, demo.data_root, demo.clients, demo.batch_size, demo.seed)


def client_app(demo: Demo, truth: TruthFolder) -> ClientApp:
    """The clients: local SGD on their batch of each round, optionally guarded."""
    data = client_data(demo)
    model_factory = demo.model_factory()
    mods = []
    if demo.guard is not None:
        guard = demo.guard
        mods.append(
            LeakageGuard(
                demo.target(),
                BatchOf(data),
                plan=AttackPlan(guard.attack, dict(guard.options), seed=demo.seed),
                threshold_psnr=guard.threshold_psnr,
                defenses=guard.defenses,
                # A seeded guard draws its noise from (seed, node, round): repeatable for
                # this experiment, and removable by a server that knows the seed. A real
                # client leaves the seed out (fresh OS randomness for every update).
                seed=demo.seed,
            )
        )
    app = ClientApp(mods=mods)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        partition_id = int(context.node_config["partition-id"])
        config = msg.content["config"]
        server_round = int(config["server-round"])
        batch = data.batch(partition_id, server_round)
        truth.save(server_round, context.node_id, batch)  # the evaluation side's copy
        model = model_factory()
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        with torch.no_grad():
            loss = F.cross_entropy(model(batch.images), batch.labels).item()
        local_sgd(model, batch, local_training(config))
        metrics = {"num-examples": len(batch), "loss": loss, "partition-id": partition_id}
        content = RecordDict(
            {"arrays": ArrayRecord(model.state_dict()), "metrics": MetricRecord(metrics)}
        )
        return Message(content=content, reply_to=msg)

    return app


def server_app(
    demo: Demo, truth: TruthFolder, evaluate: Evaluate, result: MutableMapping[str, Any]
) -> ServerApp:
    """The curious server: FedAvg over all clients, every update captured and attacked.

    `result` receives the final global model (`arrays`) and the held-out metrics by round
    (`evaluations`).
    """
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        fedavg = FedAvg(
            fraction_train=1.0,
            fraction_evaluate=0.0,  # the server scores the global model on held-out images
            min_train_nodes=demo.clients,
            min_available_nodes=demo.clients,
        )
        strategy = CuriousStrategy(fedavg, demo.target(), demo.out, plan=demo.plan(), truth=truth)
        outcome = strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord(demo.model_factory()().state_dict()),
            num_rounds=demo.rounds,
            train_config=ConfigRecord(demo.train_config()),
            evaluate_fn=evaluate,
        )
        result["arrays"] = outcome.arrays
        result["evaluations"] = dict(outcome.evaluate_metrics_serverapp)

    return app
