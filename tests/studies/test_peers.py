"""Decentralised peers: the updates they exchange, the attacks between neighbours, outputs."""

from __future__ import annotations

import argparse
import csv
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from gradleak import attacks
from gradleak.attacks.reconstruction import Reconstruction
from gradleak.cli import app as cli
from gradleak.cli.simulate import add_simulate
from gradleak.core import PrivateBatch
from gradleak.core.errors import GradleakError
from gradleak.fl import FedAvgClient, FedSGDClient, LocalTraining, split_users
from gradleak.fl.topology import build_topology, mix
from gradleak.metrics import psnr
from gradleak.scenario import Case, RunConfig, build_case
from gradleak.studies.peers import (
    DecentralizedConfig,
    DecentralizedResult,
    Simulation,
    attacker_view,
    run_decentralized,
    simulate_peers,
)

pytestmark = pytest.mark.usefixtures("one_thread")

START = 1  # peer i holds bundled image START + i


def _config(**changes: object) -> DecentralizedConfig:
    run = RunConfig(indices=(START,), attack_options={"iterations": 2}, progress=False)
    settings: dict[str, object] = {"run": run, "peers": 3, "topology": "ring"}
    settings.update(changes)
    return DecentralizedConfig(**settings)  # type: ignore[arg-type]


def _own_image(index: int) -> tuple[torch.nn.Module, PrivateBatch]:
    """Ground truth built apart from the simulation: the initial model and image `index`."""
    case = build_case(RunConfig(indices=(index,)))
    return case.server.model, case.client.batch


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> DecentralizedResult:
    out = tmp_path_factory.mktemp("simulate") / "ring3"
    return run_decentralized(_config(run=replace(_config().run, out=out)))


class _RecordingAttack:
    """Stands in for an attack: records what each call is given, returns a blank guess."""

    config = attacks.get("dlg").config
    reads = attacks.get("dlg").reads

    def __init__(self) -> None:
        self.calls: list[dict[str, object]] = []

    def with_options(self, options: object) -> _RecordingAttack:
        return self

    def reconstruct(self, update, model, knowledge, *, seed=0, progress=True):  # type: ignore[no-untyped-def]
        self.calls.append(
            {"update": update, "state": model.state_dict(), "knowledge": knowledge, "seed": seed}
        )
        images = torch.zeros(knowledge.batch_size, *knowledge.data_shape)
        labels = torch.zeros(knowledge.batch_size, dtype=torch.long)
        return Reconstruction(images, labels, loss=0.0, iterations=0, seconds=0.0)


def test_peers_attack_exactly_their_neighbours(result: DecentralizedResult) -> None:
    ring = build_topology("ring", 3)
    assert set(result.pairs) == {(a, v) for a in range(3) for v in ring.neighbours(a)}
    table = result.psnr_table()
    for a in range(3):
        assert table[a][a] is None
        for v in ring.neighbours(a):
            assert table[a][v] == result.pairs[a, v].evaluation.psnr


def test_psnr_is_scored_against_the_victims_own_image(result: DecentralizedResult) -> None:
    for (_, victim), pair in result.pairs.items():
        _, truth = _own_image(START + victim)
        recon01 = result.case.server.decode(pair.reconstruction.images)
        expected = float(psnr(recon01, result.case.server.decode(truth.images)).mean())
        assert pair.evaluation.psnr == pytest.approx(expected)


def test_each_received_update_is_what_the_senders_client_computes(
    result: DecentralizedResult,
) -> None:
    for peer, message in enumerate(result.simulation.messages[0]):
        model, batch = _own_image(START + peer)
        truth = FedSGDClient(model).compute_update(batch)
        assert message.sender == peer
        assert message.update.tensors.keys() == truth.tensors.keys()
        for name, tensor in truth.tensors.items():
            assert torch.equal(message.update.tensors[name], tensor)


def test_first_round_attackers_use_the_common_initial_model(
    result: DecentralizedResult,
) -> None:
    initial, _ = _own_image(START)
    for pair in result.pairs.values():
        assert pair.view == "initial"
        assert pair.model_error == 0.0
    for name, tensor in initial.state_dict().items():
        assert torch.equal(result.simulation.initial[name], tensor)


def test_attackers_use_their_own_seeds(result: DecentralizedResult) -> None:
    seeds = {a: pair.seed for (a, _), pair in result.pairs.items()}
    assert len(set(seeds.values())) == 3


def test_outputs(result: DecentralizedResult) -> None:
    out = result.out_dir
    assert out is not None
    names = {"simulation.json", "simulation.csv", "simulation.md", "grid.png", "best.png"}
    assert names <= {p.name for p in out.iterdir()}
    summary = json.loads((out / "simulation.json").read_text())
    assert summary["psnr_table"] == result.psnr_table()
    assert summary["graph"]["neighbours"] == {"0": [1, 2], "1": [0, 2], "2": [0, 1]}
    assert summary["true_labels"] == {
        str(i): _own_image(START + i)[1].labels.tolist() for i in range(3)
    }
    with (out / "simulation.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {(int(r["attacker"]), int(r["victim"])) for r in rows} == set(result.pairs)
    text = (out / "simulation.md").read_text()
    assert "| attacker \\ victim | 0 | 1 | 2 |" in text
    assert f"| {result.pairs[1, 0].evaluation.psnr:.2f} |" in text


def test_attacker_sees_only_the_update_its_model_view_and_grants(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = _RecordingAttack()
    monkeypatch.setattr(attacks, "get", lambda name: fake)
    config = _config(peers=4, run=replace(_config().run, labels_known=True))
    result = run_decentralized(config, write=False)
    ring = build_topology("ring", 4)
    assert len(fake.calls) == 8
    pairs = ring.directed_pairs()
    assert set(result.pairs) == set(pairs)
    for (attacker, victim), call in zip(pairs, fake.calls, strict=True):
        assert call["update"] is result.simulation.messages[0][victim].update
        knowledge = call["knowledge"]
        assert knowledge.batch_size == 1 and knowledge.num_users == 1
        assert knowledge.labels.tolist() == result.batches[victim].labels.tolist()
        assert call["seed"] == result.pairs[attacker, victim].seed
        for name, tensor in result.simulation.initial.items():
            assert torch.equal(call["state"][name], tensor)


def _two_rounds(topology: str, protocol: str) -> tuple[Case, list[PrivateBatch], Simulation]:
    case = build_case(RunConfig(indices=(0,), users=4))
    batches = split_users(case.client.batch, 4)
    graph = build_topology(topology, 4)
    weights = graph.mixing_matrix()
    local = LocalTraining(lr=0.1, steps=2) if protocol == "fedavg" else None
    settings = _config(run=RunConfig(protocol=protocol)).protocol_settings()
    settings = replace(settings, local=local)
    sim = simulate_peers(
        case.server.model, batches, graph, weights, settings, rounds=2, sgd_lr=0.05
    )
    return case, batches, sim


@pytest.mark.parametrize("protocol", ["fedsgd", "fedavg"])
def test_second_round_updates_follow_step_and_gossip_by_hand(protocol: str) -> None:
    case, batches, sim = _two_rounds("ring", protocol)
    local = LocalTraining(lr=0.1, steps=2)
    params = dict(case.server.model.named_parameters())

    def client(model: torch.nn.Module) -> FedSGDClient | FedAvgClient:
        return FedSGDClient(model) if protocol == "fedsgd" else FedAvgClient(model, local)

    half = []
    for batch in batches:
        update = client(case.server.model).compute_update(batch)
        step = -0.05 if protocol == "fedsgd" else 1.0
        half.append({n: p.detach() + step * update.tensors[n] for n, p in params.items()})
    for peer, batch in enumerate(batches):
        left, right = (peer - 1) % 4, (peer + 1) % 4
        model = build_case(RunConfig(indices=(0,))).server.model
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_((half[left][n] + half[peer][n] + half[right][n]) / 3)
                torch.testing.assert_close(sim.models[1][peer][n], p.detach())
        truth = client(model).compute_update(batch)
        for n, tensor in truth.tensors.items():
            torch.testing.assert_close(sim.messages[1][peer].update.tensors[n], tensor)


def test_later_rounds_ring_view_is_stale_full_view_is_exact() -> None:
    case, _, sim = _two_rounds("ring", "fedavg")
    ring = build_topology("ring", 4)
    state, how = attacker_view(1, 0, 1, sim, ring, ring.mixing_matrix())
    assert how == "stale"  # peer 1 never hears peer 3, peer 0's other gossip partner
    assert state is sim.messages[0][0].model
    assert not all(torch.equal(state[n], t) for n, t in sim.models[1][0].items())

    _, _, sim = _two_rounds("full", "fedavg")
    full = build_topology("full", 4)
    state, how = attacker_view(1, 0, 1, sim, full, full.mixing_matrix())
    assert how == "recomputed"
    for name, tensor in sim.models[1][0].items():
        assert torch.equal(state[name], tensor)
    consensus = mix(dict(enumerate(m.model for m in sim.messages[0])), full.mixing_matrix()[0], 0)
    assert all(torch.equal(state[n], consensus[n]) for n in state)


def test_an_attacker_cannot_view_a_non_neighbour() -> None:
    _, _, sim = _two_rounds("ring", "fedsgd")
    ring = build_topology("ring", 4)
    with pytest.raises(GradleakError, match="peer 0 does not receive peer 2's updates"):
        attacker_view(0, 2, 1, sim, ring, ring.mixing_matrix())


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"peers": 2}, "a ring topology needs at least 3 peers, got 2"),
        ({"topology": "mesh"}, "unknown topology 'mesh'"),
        ({"mixing": "max"}, "unknown gossip weights 'max'"),
        ({"rounds": 0}, "--rounds must be at least 1, got 0"),
        ({"sgd_lr": 0.0}, "--local-lr must be positive"),
        ({"run": RunConfig(protocol="fedadmm")}, "peers run fedsgd or fedavg, not fedadmm"),
        ({"run": RunConfig(attack="dlg-admm")}, "attack 'dlg-admm' reads FedADMM increments"),
        ({"run": RunConfig(indices=(0, 1))}, "cannot use run setting 'indices'"),
        ({"run": RunConfig(defenses=("prune:0.3",))}, "cannot use run setting 'defenses'"),
    ],
)
def test_bad_settings_are_one_line_errors(changes: dict[str, object], message: str) -> None:
    with pytest.raises(GradleakError, match=message) as info:
        _config(**changes).validate()
    assert "\n" not in str(info.value)


def _parser() -> argparse.ArgumentParser:
    parser = cli.Parser(prog="gradleak")
    add_simulate(parser.add_subparsers(dest="command", parser_class=cli.Parser))
    return parser


def test_cli_prints_the_table(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = _RecordingAttack()
    monkeypatch.setattr(attacks, "get", lambda name: fake)
    out = tmp_path / "run"
    argv = ["simulate", "--peers", "4", "--topology", "full", "--out", str(out), "--no-progress"]
    args = _parser().parse_args(argv)
    assert args.handler(args) == 0
    text = capsys.readouterr().out
    assert "| attacker \\ victim | 0 | 1 | 2 | 3 |" in text
    assert len(fake.calls) == 12
    assert (out / "simulation.json").is_file()


def test_cli_bad_input_is_a_gradleak_error() -> None:
    args = _parser().parse_args(["simulate", "--peers", "2", "--no-progress"])
    with pytest.raises(GradleakError, match="at least 3 peers"):
        args.handler(args)
    with pytest.raises(SystemExit) as info:
        _parser().parse_args(["simulate", "--topology", "torus"])
    assert info.value.code == 2
