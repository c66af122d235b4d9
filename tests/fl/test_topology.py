"""Peer graphs: exact neighbour sets, gossip weights, gossip averaging and bad input."""

from __future__ import annotations

import pytest
import torch

from gradleak.core.errors import GradleakError
from gradleak.fl.topology import TOPOLOGIES, build_topology, mix


def gossip(states: list[dict[str, torch.Tensor]], weights: torch.Tensor) -> list[dict]:
    """One gossip step for all peers through `mix`: peer i's new state is Σ_k W_ik states[k]."""
    by_peer = dict(enumerate(states))
    return [mix(by_peer, weights[i], i) for i in range(len(states))]


def _states(peers: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [
        {
            "w": torch.randn(3, 2, generator=generator),
            "b": torch.randn(4, generator=generator, dtype=torch.float64),
        }
        for _ in range(peers)
    ]


def test_ring_neighbours_are_the_two_adjacent_peers() -> None:
    ring = build_topology("ring", 5)
    expected = {0: {1, 4}, 1: {0, 2}, 2: {1, 3}, 3: {2, 4}, 4: {0, 3}}
    assert {i: set(ring.neighbours(i)) for i in range(5)} == expected
    assert ring.edges == ((0, 1), (0, 4), (1, 2), (2, 3), (3, 4))


def test_three_peer_ring_has_three_edges() -> None:
    ring = build_topology("ring", 3)
    assert ring.edges == ((0, 1), (0, 2), (1, 2))
    assert {i: set(ring.neighbours(i)) for i in range(3)} == {0: {1, 2}, 1: {0, 2}, 2: {0, 1}}


def test_full_graph_connects_every_pair() -> None:
    full = build_topology("full", 4)
    assert {i: set(full.neighbours(i)) for i in range(4)} == {
        0: {1, 2, 3},
        1: {0, 2, 3},
        2: {0, 1, 3},
        3: {0, 1, 2},
    }
    assert len(full.edges) == 6
    assert build_topology("full", 2).edges == ((0, 1),)


def test_line_and_star() -> None:
    line = build_topology("line", 4)
    assert [set(line.neighbours(i)) for i in range(4)] == [{1}, {0, 2}, {1, 3}, {2}]
    star = build_topology("star", 4)
    assert [set(star.neighbours(i)) for i in range(4)] == [{1, 2, 3}, {0}, {0}, {0}]


def test_directed_pairs_are_both_directions_of_every_edge() -> None:
    ring = build_topology("ring", 4)
    pairs = set(ring.directed_pairs())
    assert pairs == {(i, j) for i in range(4) for j in ring.neighbours(i)}
    assert len(pairs) == 8
    assert ring.closed_neighbourhood(0) == (0, 1, 3)


def test_ring_and_full_weights_are_the_plain_mean_under_both_schemes() -> None:
    for name, peers in (("ring", 5), ("full", 4)):
        graph = build_topology(name, peers)
        for scheme in ("metropolis", "uniform"):
            weights = graph.mixing_matrix(scheme)
            for i in range(peers):
                group = graph.closed_neighbourhood(i)
                expected = torch.zeros(peers, dtype=torch.float64)
                expected[list(group)] = 1.0 / len(group)
                torch.testing.assert_close(weights[i], expected)


def test_metropolis_weights_of_a_star_by_hand() -> None:
    # Hub degree 3, leaves degree 1: every edge weighs 1 / (1 + 3).
    weights = build_topology("star", 4).mixing_matrix("metropolis")
    expected = torch.tensor(
        [
            [0.25, 0.25, 0.25, 0.25],
            [0.25, 0.75, 0.0, 0.0],
            [0.25, 0.0, 0.75, 0.0],
            [0.25, 0.0, 0.0, 0.75],
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(weights, expected)


def test_gossip_on_a_ring_is_the_mean_of_self_and_neighbours() -> None:
    states = _states(4)
    weights = build_topology("ring", 4).mixing_matrix()
    mixed = gossip(states, weights)
    for name in ("w", "b"):
        by_hand = (states[3][name] + states[0][name] + states[1][name]) / 3
        torch.testing.assert_close(mixed[0][name], by_hand)
        by_hand = (states[1][name] + states[2][name] + states[3][name]) / 3
        torch.testing.assert_close(mixed[2][name], by_hand)
        assert mixed[0][name].dtype == states[0][name].dtype


def test_gossip_on_a_full_graph_reaches_consensus_in_one_step() -> None:
    states = _states(3)
    mixed = gossip(states, build_topology("full", 3).mixing_matrix())
    mean = sum(s["w"] for s in states) / 3
    for peer in mixed:
        torch.testing.assert_close(peer["w"], mean)


@pytest.mark.parametrize("name", list(TOPOLOGIES))
def test_metropolis_gossip_keeps_the_global_mean(name: str) -> None:
    graph = build_topology(name, 5)
    weights = graph.mixing_matrix("metropolis")
    torch.testing.assert_close(weights, weights.T)
    torch.testing.assert_close(weights.sum(dim=0), torch.ones(5, dtype=torch.float64))
    states = _states(5, seed=1)
    mixed = states
    for _ in range(3):
        mixed = gossip(mixed, weights)
    for key in ("w", "b"):
        before = torch.stack([s[key] for s in states]).mean(dim=0)
        after = torch.stack([s[key] for s in mixed]).mean(dim=0)
        torch.testing.assert_close(after, before)


def test_uniform_weights_on_a_star_move_the_global_mean() -> None:
    # Not doubly stochastic off regular graphs: the reason metropolis is the default.
    weights = build_topology("star", 4).mixing_matrix("uniform")
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(4, dtype=torch.float64))
    assert not torch.allclose(weights.sum(dim=0), torch.ones(4, dtype=torch.float64))


def test_gossip_keeps_integer_buffers_of_each_peer() -> None:
    states = [{"w": torch.full((2,), float(i)), "n": torch.tensor(i)} for i in range(3)]
    mixed = gossip(states, build_topology("full", 3).mixing_matrix())
    assert [int(s["n"]) for s in mixed] == [0, 1, 2]
    torch.testing.assert_close(mixed[2]["w"], torch.full((2,), 1.0))


@pytest.mark.parametrize(
    ("name", "peers", "message"),
    [
        ("ring", 2, "a ring topology needs at least 3 peers, got 2"),
        ("full", 1, "a full topology needs at least 2 peers, got 1"),
        ("line", 0, "a line topology needs at least 2 peers, got 0"),
        ("torus", 4, "unknown topology 'torus'; choose one of: ring, full, line, star"),
    ],
)
def test_bad_topologies_are_one_line_errors(name: str, peers: int, message: str) -> None:
    with pytest.raises(GradleakError, match="^" + message) as info:
        build_topology(name, peers)
    assert "\n" not in str(info.value)


def test_bad_peer_scheme_and_weights_are_errors() -> None:
    ring = build_topology("ring", 3)
    with pytest.raises(GradleakError, match="peer 3 is not in the ring topology of 3 peers"):
        ring.neighbours(3)
    with pytest.raises(GradleakError, match="unknown gossip weights 'max'"):
        ring.mixing_matrix("max")
    with pytest.raises(GradleakError, match="gossip needs the models of peers"):
        mix(dict(enumerate(_states(2))), ring.mixing_matrix()[2], 2)
