"""A tiny Flower app the Flower tests share: MNIST-shaped images, a small MLP, FedSGD clients.

Each client takes one SGD step on one private image chosen by its partition and the round,
so every update is known exactly and an analytic attack recovers the image exactly. The
messages here are made by hand, outside a Flower run (`train_message`, `reply`), or by an
in-process grid (`LocalGrid`) that stands in for Flower's simulation where the network does
not matter.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import torch
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MessageType,
    Metadata,
    MetricRecord,
    RecordDict,
)
from flwr.supercore.task_identity import TaskIdentity
from torch import nn
from torch.nn import functional as F

from gradleak.core.batch import PrivateBatch
from gradleak.integrations.flower import FlowerTarget, TruthFolder
from gradleak.models import build_model

DATASET = "mnist"
MODEL = "mlp1-64"
MEAN, STD = 0.1307, 0.3081
SHAPE = (1, 28, 28)
LR = 0.1
SERVER = 0  # the node id Flower gives the server side


def net() -> nn.Module:
    """The clients' architecture: an MLP with one 64-unit hidden layer, always the same."""
    return build_model(MODEL, num_classes=10, in_channels=1, image_size=(28, 28), seed=0)


def target(**settings: object) -> FlowerTarget:
    """The server's reading of the clients' replies: FedSGD with the clients' `LR`, unless
    `settings` say otherwise."""
    return FlowerTarget.for_dataset(
        DATASET, **{"model": net, "protocol": "fedsgd", "lr": LR, **settings}
    )


def truth_folder(root: Path) -> TruthFolder:
    """The evaluation side's copy of the clients' batches, as `--truth` files under `root`."""
    return TruthFolder(root, target().facts)


def pixels(partition: int, server_round: int) -> torch.Tensor:
    """The private image of a partition in a round, as [0, 1] pixels (1×1×28×28)."""
    g = torch.Generator().manual_seed(1000 * partition + server_round)
    return torch.rand(1, *SHAPE, generator=g)


def private_batch(partition: int, server_round: int) -> PrivateBatch:
    """The normalised image and its label that a partition trains on in a round."""
    g = torch.Generator().manual_seed(7000 + 1000 * partition + server_round)
    label = torch.randint(0, 10, (1,), generator=g)
    return PrivateBatch((pixels(partition, server_round) - MEAN) / STD, label)


def sgd_step(
    state: Mapping[str, torch.Tensor], batch: PrivateBatch, lr: float = LR
) -> tuple[dict[str, torch.Tensor], float]:
    """The model after one SGD step of size `lr` on `batch`, and the step's loss."""
    model = net()
    model.load_state_dict(state)
    loss = F.cross_entropy(model(batch.images), batch.labels)
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= lr * p.grad
    return {n: t.detach().clone() for n, t in model.state_dict().items()}, float(loss.detach())


def train_message(state: Mapping[str, torch.Tensor], node: int, server_round: int) -> Message:
    """A training message from the server to `node`, made outside a Flower run."""
    content = RecordDict(
        {
            "arrays": ArrayRecord(dict(state)),
            "config": ConfigRecord({"server-round": server_round, "lr": LR}),
        }
    )
    return Message(content, metadata=metadata(node, MessageType.TRAIN))


def metadata(node: int, message_type: str) -> Metadata:
    """Metadata of a message from the server to `node` (outside a run Flower sets none)."""
    return Metadata(
        run_id=1,
        message_id=f"{message_type}-{node}",
        src_node_id=SERVER,
        dst_node_id=node,
        reply_to_message_id="",
        group_id="",
        created_at=time.time(),
        ttl=3600.0,
        message_type=message_type,
    )


def reply(msg: Message, state: Mapping[str, torch.Tensor], **metrics: float) -> Message:
    """A client's training reply to `msg`: its model and its metrics (num-examples 1)."""
    content = RecordDict(
        {
            "arrays": ArrayRecord(dict(state)),
            "metrics": MetricRecord({"num-examples": 1, **metrics}),
        }
    )
    return Message(content, reply_to=msg)


def context(node: int, partition: int) -> Context:
    """A client's context outside a run: its node id and partition."""
    return Context(
        run_id=1,
        node_id=node,
        node_config={"partition-id": partition, "num-partitions": 2},
        state=RecordDict(),
        run_config={},
    )


def batch_of(msg: Message, ctx: Context) -> PrivateBatch:
    """The batch a client trains on for `msg` (a guard's `private_batch`)."""
    server_round = int(msg.content["config"]["server-round"])
    return private_batch(int(ctx.node_config["partition-id"]), server_round)


def train(msg: Message, ctx: Context) -> Message:
    """The clients' training: one SGD step on their private batch."""
    state = msg.content["arrays"].to_torch_state_dict()
    local, loss = sgd_step(state, batch_of(msg, ctx), float(msg.content["config"]["lr"]))
    return reply(msg, local, loss=loss)


@contextmanager
def server_identity() -> Iterator[None]:
    """Flower's identity of a server-side task, as a run sets it: strategies make their
    messages with it. Restored afterwards."""
    before = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, SERVER
    try:
        yield
    finally:
        TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = before


class LocalGrid:
    """Flower's `Grid` for `Strategy.start`, in-process: each node answers with `client`.

    Args:
        partitions: the partition of each node id.
        client: a training message's handler (default: `train`); `reply_hook` may alter
            replies before the server sees them.
    """

    def __init__(
        self,
        partitions: Mapping[int, int],
        client: Callable[[Message, Context], Message] = train,
        reply_hook: Callable[[Message], Message] | None = None,
    ) -> None:
        self.partitions = dict(partitions)
        self.client = client
        self.reply_hook = reply_hook

    def get_node_ids(self) -> list[int]:
        return sorted(self.partitions)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float) -> list[Message]:
        replies = []
        for sent in messages:
            node = sent.metadata.dst_node_id
            # What arrives at the client is a copy with the metadata a run would give it.
            msg = Message(sent.content, metadata=metadata(node, sent.metadata.message_type))
            answer = self.client(msg, context(node, self.partitions[node]))
            replies.append(answer if self.reply_hook is None else self.reply_hook(answer))
        return replies
