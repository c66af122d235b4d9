"""Which images each client holds, what it trains on in a round, and the held-out images.

Both datasets come from gradleak's loaders (`open_images`, normalised with the dataset's
statistics). CIFAR-10: the shared data holds test images 0–599; 0–99 are the evaluation
protocol of gradleak's other results, so the clients share images 100–499 and 500–599 are
held out. MNIST: the clients share test images 0–8999 and 9000–9999 are held out.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import torch

from gradleak.core.batch import PrivateBatch
from gradleak.core.errors import GradleakError
from gradleak.data import LoadedImages, open_images


@dataclass(frozen=True)
class Split:
    """The images the clients share out, and those the global model is scored on."""

    clients: range
    held_out: range


SPLITS = {
    "cifar10": Split(range(100, 500), range(500, 600)),
    "mnist": Split(range(0, 9000), range(9000, 10000)),
}


@functools.lru_cache(maxsize=2)
def images(dataset: str, data_root: Path) -> LoadedImages:
    """The dataset's test split, opened once per process (each client actor has its own).

    Raises:
        GradleakError: the dataset's files are missing under `data_root`, or it has fewer
            images than the demo uses.
    """
    loaded = open_images(dataset, data_root, "test")
    needed = SPLITS[dataset].held_out.stop
    if len(loaded) < needed:
        raise GradleakError(
            f"{loaded.description} has {len(loaded)} images, the demo uses {needed}; pass "
            "--data-root with the full test split"
        )
    return loaded


def partition(dataset: str, clients: int, seed: int) -> list[list[int]]:
    """The images of each client: the shared images shuffled once, in equal shards.

    Raises:
        GradleakError: more clients than images.
    """
    pool = SPLITS[dataset].clients
    if clients > len(pool):
        raise GradleakError(f"{clients} clients need more than the {len(pool)} images to share")
    order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed)).tolist()
    size = len(pool) // clients
    return [[pool[i] for i in order[k * size : (k + 1) * size]] for k in range(clients)]


def round_indices(shard: list[int], server_round: int, batch_size: int) -> list[int]:
    """The images a client trains on in a round: the next `batch_size` of its shard."""
    start = (server_round - 1) * batch_size
    return [shard[(start + i) % len(shard)] for i in range(batch_size)]


@dataclass(frozen=True)
class ClientData:
    """How every client finds its batch of a round (picklable: it travels to the actors).

    Attributes:
        dataset: cifar10 or mnist.
        data_root: the datasets' folder.
        clients: the number of clients.
        batch_size: images per client and round.
        seed: the partition's seed.
    """

    dataset: str
    data_root: Path
    clients: int
    batch_size: int
    seed: int

    def indices(self, partition_id: int, server_round: int) -> list[int]:
        """The test-split indices client `partition_id` trains on in `server_round`."""
        shard = partition(self.dataset, self.clients, self.seed)[partition_id]
        return round_indices(shard, server_round, self.batch_size)

    def batch(self, partition_id: int, server_round: int) -> PrivateBatch:
        """The client's private batch of the round (normalised images, labels)."""
        loaded = images(self.dataset, self.data_root)
        return PrivateBatch(*loaded.normalized(self.indices(partition_id, server_round)))

    def held_out(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The held-out images (normalised) and labels, in no client's shard."""
        loaded = images(self.dataset, self.data_root)
        return loaded.normalized(list(SPLITS[self.dataset].held_out))
