"""Peer-to-peer graphs for decentralised training, their gossip weights and gossip averaging.

A topology is an undirected graph on peers 0..P−1 without self-loops. Gossip replaces each
peer's model by a weighted mean over its closed neighbourhood (itself and its neighbours):
θ_i ← Σ_k W_ik θ_k. Two weight schemes are offered:

- `metropolis` (default): W_ik = 1 / (1 + max(d_i, d_k)) for neighbours, W_ii = 1 − Σ_k W_ik.
  Symmetric and doubly stochastic on every graph, so gossip keeps the peers' global mean.
- `uniform`: W_ik = 1 / (1 + d_i) over the closed neighbourhood, the plain mean of a peer's
  own and its neighbours' models. Doubly stochastic only on regular graphs (ring, full),
  where it equals `metropolis`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch

from gradleak.core.errors import GradleakError

Edge = tuple[int, int]
State = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class Topology:
    """An undirected graph of `peers` peers; `edges` are sorted pairs (i, j) with i < j."""

    name: str
    peers: int
    edges: tuple[Edge, ...]

    def neighbours(self, peer: int) -> tuple[int, ...]:
        """The peers `peer` exchanges with, in increasing order (itself excluded)."""
        self._check_peer(peer)
        return tuple(
            sorted(
                {j for i, j in self.edges if i == peer} | {i for i, j in self.edges if j == peer}
            )
        )

    def closed_neighbourhood(self, peer: int) -> tuple[int, ...]:
        """`peer` and its neighbours, in increasing order: whose models it mixes."""
        return tuple(sorted((peer, *self.neighbours(peer))))

    def degree(self, peer: int) -> int:
        return len(self.neighbours(peer))

    def directed_pairs(self) -> list[Edge]:
        """Every (sender, receiver) pair of one exchange: both directions of each edge."""
        return sorted([*self.edges, *((j, i) for i, j in self.edges)])

    def mixing_matrix(self, scheme: str = "metropolis") -> torch.Tensor:
        """The P×P gossip weights W (float64, rows sum to 1) of a scheme in MIXING."""
        try:
            build = MIXING[scheme]
        except KeyError:
            raise GradleakError(
                f"unknown gossip weights {scheme!r}; choose one of: {', '.join(MIXING)}"
            ) from None
        return build(self)

    def describe(self) -> dict[str, object]:
        return {
            "topology": self.name,
            "peers": self.peers,
            "edges": [list(e) for e in self.edges],
            "neighbours": {str(i): list(self.neighbours(i)) for i in range(self.peers)},
        }

    def _check_peer(self, peer: int) -> None:
        if not 0 <= peer < self.peers:
            raise GradleakError(
                f"peer {peer} is not in the {self.name} topology of {self.peers} peers "
                f"(0..{self.peers - 1})"
            )


def _metropolis(topology: Topology) -> torch.Tensor:
    # Gossip weights are read on the host (`mix`): they live on the CPU.
    weights = torch.zeros(topology.peers, topology.peers, dtype=torch.float64, device="cpu")
    for i, j in topology.edges:
        w = 1.0 / (1 + max(topology.degree(i), topology.degree(j)))
        weights[i, j] = weights[j, i] = w
    weights += torch.diag(1.0 - weights.sum(dim=1))
    return weights


def _uniform(topology: Topology) -> torch.Tensor:
    # Gossip weights are read on the host (`mix`): they live on the CPU.
    weights = torch.zeros(topology.peers, topology.peers, dtype=torch.float64, device="cpu")
    for i in range(topology.peers):
        group = list(topology.closed_neighbourhood(i))
        weights[i, group] = 1.0 / len(group)
    return weights


MIXING: dict[str, Callable[[Topology], torch.Tensor]] = {
    "metropolis": _metropolis,
    "uniform": _uniform,
}


@dataclass(frozen=True)
class _Shape:
    build: Callable[[int], Iterable[Edge]]
    min_peers: int
    text: str


TOPOLOGIES: dict[str, _Shape] = {
    "ring": _Shape(lambda p: ((i, (i + 1) % p) for i in range(p)), 3, "peer i talks to i±1 mod P"),
    "full": _Shape(lambda p: itertools.combinations(range(p), 2), 2, "every peer talks to all"),
    "line": _Shape(lambda p: ((i, i + 1) for i in range(p - 1)), 2, "a ring without edge P−1–0"),
    "star": _Shape(lambda p: ((0, i) for i in range(1, p)), 2, "peer 0 talks to every other"),
}


def build_topology(name: str, peers: int) -> Topology:
    """The named graph on `peers` peers; bad names and too few peers are one-line errors."""
    try:
        shape = TOPOLOGIES[name]
    except KeyError:
        raise GradleakError(
            f"unknown topology {name!r}; choose one of: {', '.join(TOPOLOGIES)}"
        ) from None
    if isinstance(peers, bool) or not isinstance(peers, int) or peers < shape.min_peers:
        raise GradleakError(
            f"a {name} topology needs at least {shape.min_peers} peers, got {peers}; "
            f"use --peers {shape.min_peers} or more"
        )
    edges = tuple(sorted({(min(i, j), max(i, j)) for i, j in shape.build(peers)}))
    return Topology(name, peers, edges)


def mix(states: Mapping[int, State], row: torch.Tensor, own: int) -> dict[str, torch.Tensor]:
    """Σ_k row[k]·states[k] over the peers with a non-zero weight; `own` supplies the rest.

    Sums run in float64 over increasing peer order, so whoever computes a mix from the same
    states gets the same bits. Non-float tensors (batch counters) keep `own`'s value.
    """
    partners = [k for k in range(len(row)) if row[k] != 0]
    missing = [k for k in partners if k not in states]
    if missing:
        raise GradleakError(f"gossip needs the models of peers {missing}, which were not given")
    mixed = {}
    for name, tensor in states[own].items():
        if not tensor.is_floating_point():
            mixed[name] = tensor.clone()
            continue
        total = sum(float(row[k]) * states[k][name].double() for k in partners)
        mixed[name] = torch.as_tensor(total, device=tensor.device).to(tensor.dtype)
    return mixed
