"""Decentralised training on a peer graph, where every peer attacks its neighbours' updates.

Protocol (adapt, then combine). All peers start from the same model θ¹. In round r every
peer i, holding θᵢʳ:

1. computes its update Uᵢ on its own private batch at θᵢʳ (fedsgd: the gradient; fedavg:
   the weight difference after local SGD) and sends it to its neighbours;
2. takes its own step, θᵢʳ⁺½ = θᵢʳ − η·Uᵢ (gradient) or θᵢʳ + Uᵢ (weight difference), and
   sends θᵢʳ⁺½ to its neighbours;
3. gossips: θᵢʳ⁺¹ = Σₖ Wᵢₖ θₖʳ⁺½ over itself and its neighbours (`fl/topology.py`).

Attacker's view. In the attacked round R, peer j attacks every neighbour i's update Uᵢᴿ
with the model j believes i computed it at: in round 1 the common initial model (exact);
later, j recomputes θᵢᴿ from the half-step models it received in round R−1 and the public
gossip weights when it received those of all of i's gossip partners (i's closed
neighbourhood lies in j's: always on `full`, and on a 3-peer ring), and otherwise uses the
last model i sent it, θᵢᴿ⁻½ (stale by i's own gossip). Beyond that it knows what
`gradleak attack` grants: data shape, normalisation, classes, the batch size b, the
protocol's local training, the batch-norm mode, and the labels only with `labels_known`.
Private batches stay with their peers and the evaluation side.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from gradleak import attacks
from gradleak.attacks.base import modifies_model
from gradleak.attacks.reconstruction import Reconstruction
from gradleak.core.batch import PrivateBatch
from gradleak.core.errors import GradleakError
from gradleak.core.files import check_out_dir, output_dir, write_atomically
from gradleak.core.knowledge import Knowledge, grant_knowledge
from gradleak.core.settings import to_plain
from gradleak.core.update import SharedUpdate, UpdateKind
from gradleak.fl.protocols import DEFAULT_LOCAL_LR, PROTOCOLS, ProtocolSettings
from gradleak.fl.rounds import split_users
from gradleak.fl.topology import MIXING, Topology, build_topology, mix
from gradleak.metrics import Evaluation
from gradleak.models.user import model_label
from gradleak.report import save_comparison_grid, to_pil
from gradleak.report.images import resolve_scale, save_png, tile_rows
from gradleak.report.tables import write_csv
from gradleak.scenario.case import Case, ServerView, case_from
from gradleak.scenario.config import RunConfig, settings_digest
from gradleak.scenario.observe import score
from gradleak.scenario.plan import plan_run

State = dict[str, torch.Tensor]


def peer_protocols() -> list[str]:
    """The protocols peers can run without a central server."""
    return [name for name, p in PROTOCOLS.items() if p.peer_to_peer]


def peer_attacks() -> list[str]:
    """The attack presets that read what peers share under every peer protocol."""
    kinds = {PROTOCOLS[name].shares for name in peer_protocols()}
    # A malicious server's attacks need a server that sends the model: peers have none.
    built = {name: attacks.get(name) for name in attacks.available()}
    return [
        name
        for name, attack in built.items()
        if kinds <= attack.reads and not modifies_model(attack)
    ]


@dataclass(frozen=True)
class DecentralizedConfig:
    """The peer graph and rounds; `run` gives model, data, b per peer, protocol and attack.

    `run.indices[0]` is the start index: peer i holds images [start + i·b, start + (i+1)·b).
    `sgd_lr` is the step size of a fedsgd peer's own step (fedavg uses `run.local_lr`).
    """

    run: RunConfig = field(default_factory=RunConfig)
    peers: int = 4
    topology: str = "ring"
    mixing: str = "metropolis"
    rounds: int = 1  # the attacked round is the last
    sgd_lr: float = DEFAULT_LOCAL_LR

    def validate(self) -> DecentralizedConfig:
        self.graph()
        if self.mixing not in MIXING:
            raise GradleakError(
                f"unknown gossip weights {self.mixing!r}; choose one of: {', '.join(MIXING)}"
            )
        if isinstance(self.rounds, bool) or not isinstance(self.rounds, int) or self.rounds < 1:
            raise GradleakError(f"--rounds must be at least 1, got {self.rounds}")
        if not (self.sgd_lr > 0 and math.isfinite(self.sgd_lr)):
            raise GradleakError(f"--local-lr must be positive, got {self.sgd_lr}")
        run = self.run
        if run.protocol not in peer_protocols():
            names = " or ".join(peer_protocols())
            raise GradleakError(f"peers run {names}, not {run.protocol}; use --protocol {names}")
        reads = attacks.get(run.attack).reads
        if PROTOCOLS[run.protocol].shares not in reads:
            kinds = " and ".join(k.description for k in UpdateKind if k in reads)
            raise GradleakError(
                f"attack {run.attack!r} reads {kinds}, which {run.protocol} peers do not "
                f"share; use one of: {', '.join(peer_attacks())}"
            )
        refused = {
            "image": (run.image is not None, "peers hold dataset images; drop --image"),
            "defenses": (bool(run.defenses), "defenses are not simulated here; drop --defense"),
            "indices": (len(run.indices) != 1, "give one start index, e.g. --index 0"),
            "users": (run.users != 1, "each peer is one user; drop users (use --peers)"),
            "rounds": (run.rounds != 1, "set rounds on the simulation, not in the run settings"),
        }
        for key, (bad, fix) in refused.items():
            if bad:
                raise GradleakError(f"the simulation cannot use run setting {key!r}: {fix}")
        self.case_config().validate()
        return self

    def graph(self) -> Topology:
        return build_topology(self.topology, self.peers)

    def case_config(self) -> RunConfig:
        """The run that loads all peers' images: P users of b images from the start index."""
        return replace(self.run, users=self.peers)

    def protocol_settings(self) -> ProtocolSettings:
        return replace(self.case_config().protocol_settings(), users=1)

    def default_out(self) -> Path:
        """runs/NAME: a readable stem and a digest of every setting that changes the result
        (gossip weights, step size, attack options, …), so different simulations never
        share a directory."""
        r = self.run
        name = (
            f"simulate-{self.topology}{self.peers}-{r.attack}-{model_label(r.model)}-{r.dataset}-"
            f"{r.indices[0]}-b{r.batch_size}-{r.protocol}-r{self.rounds}-s{r.seed}"
        )
        settings = {**self.describe(), "run": r.result_settings(), "sgd_lr": self.sgd_lr}
        return Path("runs") / f"{name}-{settings_digest(to_plain(settings))}"

    def describe(self) -> dict[str, object]:
        return {
            "peers": self.peers,
            "topology": self.topology,
            "mixing": self.mixing,
            "rounds": self.rounds,
            "attacked_round": self.rounds,
            "sgd_lr": None if PROTOCOLS[self.run.protocol].trains_locally else self.sgd_lr,
            "run": to_plain(self.run),
            "protocol_settings": self.protocol_settings().describe(),
        }


@dataclass(frozen=True)
class Message:
    """What `sender` sends each neighbour in one round: its update, then its stepped model."""

    sender: int
    update: SharedUpdate
    model: State  # θʳ⁺½, the gossip payload


@dataclass
class Simulation:
    """The rounds as they ran. `models` is ground truth: the evaluation side reads it only."""

    initial: State
    messages: list[list[Message]]  # [round][sender], rounds counted from 0
    models: list[list[State]]  # [round][peer]: θᵢʳ, the model peer i computed its update at


def _state(model: nn.Module) -> State:
    return {name: t.detach().clone() for name, t in model.state_dict().items()}


def _module(template: nn.Module, state: Mapping[str, torch.Tensor]) -> nn.Module:
    model = copy.deepcopy(template)
    model.load_state_dict(state)
    return model


def simulate_peers(
    model: nn.Module,
    batches: list[PrivateBatch],
    topology: Topology,
    weights: torch.Tensor,
    settings: ProtocolSettings,
    rounds: int,
    sgd_lr: float = DEFAULT_LOCAL_LR,
) -> Simulation:
    """Run `rounds` rounds of decentralised training; every peer starts from `model`.

    Args:
        model: the common initial model.
        batches: each peer's private batch (peer i holds batches[i]).
        topology: who exchanges with whom.
        weights: the P×P gossip weights.
        settings: the protocol every peer follows (one user each).
        rounds: how many rounds to run.
        sgd_lr: the step size of a peer's own step when it shares gradients.

    Returns:
        The initial state, every round's messages and the models the peers computed at.

    Raises:
        GradleakError: not one batch per peer.
    """
    if len(batches) != topology.peers:
        raise GradleakError(f"{len(batches)} private batches for {topology.peers} peers")
    initial = _state(model)
    states = [copy.deepcopy(initial) for _ in batches]
    simulation = Simulation(initial, [], [])
    for _ in range(rounds):
        simulation.models.append(states)
        messages = []
        for peer, batch in enumerate(batches):
            client = settings.client(_module(model, states[peer]))
            update = client.compute_update(batch)
            step = settings.protocol.step
            # Buffers (batch-norm statistics) come from the client's own forward passes.
            stepped = _state(client.model)
            for name, tensor in update.tensors.items():
                stepped[name] = step(states[peer][name], tensor, sgd_lr)
            messages.append(Message(peer, update, stepped))
        simulation.messages.append(messages)
        half = {m.sender: m.model for m in messages}
        states = [mix(half, weights[i], i) for i in range(topology.peers)]
    return simulation


def attacker_view(
    attacker: int,
    victim: int,
    round_index: int,
    simulation: Simulation,
    topology: Topology,
    weights: torch.Tensor,
) -> tuple[State, str]:
    """The model `attacker` believes `victim` held in round `round_index` (from 0), and how.

    It reads only the common initial model, the public weights and the messages the
    attacker itself sent or received in the round before.
    """
    if victim not in topology.neighbours(attacker):
        raise GradleakError(f"peer {attacker} does not receive peer {victim}'s updates")
    if round_index == 0:
        return simulation.initial, "initial"
    heard = topology.closed_neighbourhood(attacker)
    received = {k: simulation.messages[round_index - 1][k].model for k in heard}
    partners = [k for k in range(topology.peers) if weights[victim, k] != 0]
    if set(partners) <= set(heard):
        return mix(received, weights[victim], victim), "recomputed"
    return received[victim], "stale"


def attacker_seed(seed: int, attacker: int) -> int:
    """Each attacker's own randomness, derived from the run seed and its peer number."""
    return int(np.random.SeedSequence([seed, attacker]).generate_state(1)[0])


@dataclass
class PairResult:
    """One attacker's reconstruction of one neighbour's update, and its scores."""

    attacker: int
    victim: int
    seed: int
    view: str  # initial, recomputed or stale: how the attacker got the victim's model
    model_error: float  # ‖view − truth‖ / ‖truth‖ over parameters (evaluation side)
    reconstruction: Reconstruction
    evaluation: Evaluation

    def row(self) -> dict[str, object]:
        rec, ev = self.reconstruction, self.evaluation
        return {
            "attacker": self.attacker,
            "victim": self.victim,
            "psnr": ev.psnr,
            "ssim": ev.ssim,
            "mse": ev.mse,
            "label_accuracy": ev.label_accuracy,
            "iterations": rec.iterations,
            "seconds": rec.seconds,
            "matching_loss": rec.loss,
            "model_view": self.view,
            "model_error": self.model_error,
            "attack_seed": self.seed,
            "interrupted": rec.interrupted,
        }


@dataclass
class DecentralizedResult:
    """The simulation, every neighbour attack and where the outputs went."""

    config: DecentralizedConfig
    case: Case
    topology: Topology
    weights: torch.Tensor
    batches: list[PrivateBatch]
    simulation: Simulation
    pairs: dict[tuple[int, int], PairResult]
    attack_config: dict[str, object] = field(default_factory=dict)  # the resolved preset
    knowledge: list[Knowledge] = field(default_factory=list)  # what each victim's attackers know
    interrupted: bool = False
    out_dir: Path | None = None

    def psnr_table(self) -> list[list[float | None]]:
        """P×P PSNR: row attacker, column victim; None where they are not neighbours."""
        peers = range(self.topology.peers)
        return [
            [self.pairs[a, v].evaluation.psnr if (a, v) in self.pairs else None for v in peers]
            for a in peers
        ]

    def best_per_victim(self) -> dict[int, PairResult]:
        """For each attacked peer, the neighbour whose reconstruction scored best."""
        best: dict[int, PairResult] = {}
        for pair in self.pairs.values():
            if pair.victim not in best or pair.evaluation.psnr > best[pair.victim].evaluation.psnr:
                best[pair.victim] = pair
        return dict(sorted(best.items()))


def _model_error(view: State, truth: State, names: list[str]) -> float:
    diff = sum(float((view[n].double() - truth[n].double()).pow(2).sum()) for n in names)
    norm = sum(float(truth[n].double().pow(2).sum()) for n in names)
    return math.sqrt(diff / norm) if norm else math.sqrt(diff)


def run_decentralized(
    config: DecentralizedConfig,
    *,
    write: bool = True,
    on_pair: Callable[[PairResult], None] | None = None,
    overwrite: bool = False,
) -> DecentralizedResult:
    """Simulate the peers, let each attack its neighbours' last-round updates, score, write.

    Args:
        config: the peer graph, rounds and the run settings every peer shares.
        write: write simulation.json/.csv/.md, grid.png and best.png to the output folder.
        on_pair: called with each attacker–victim result as soon as it is scored.
        overwrite: replace an earlier simulation in the output folder (swapped in whole
            once the new one is written); without it a folder holding files is refused
            before any work.

    Returns:
        The simulation, every pair's reconstruction and scores, and where they went. Ctrl-C
        during an attack ends the simulation with what is done (`interrupted`).

    Raises:
        GradleakError: settings peers cannot run (checked before any work), missing data or
            an output folder that cannot be written.
    """
    config = config.validate()
    out_dir = None
    if write:
        out_dir = check_out_dir(Path(config.run.out or config.default_out()), overwrite=overwrite)
    plan = plan_run(config.case_config())
    case = case_from(plan.data, plan.model, plan.protocol, plan.grants).to(plan.device)
    server, client = case
    topology = config.graph()
    weights = topology.mixing_matrix(config.mixing)
    batches = split_users(client.batch, config.peers)
    # Each peer is one user of the protocol the run describes.
    settings = replace(plan.protocol, users=1)
    simulation = simulate_peers(
        server.model, batches, topology, weights, settings, config.rounds, config.sgd_lr
    )
    attack = plan.attack
    facts = server.knowledge.data_facts()
    knowledge = [grant_knowledge(facts, batch.labels, settings, plan.grants) for batch in batches]
    last = config.rounds - 1
    names = [name for name, _ in server.model.named_parameters()]
    result = DecentralizedResult(
        config,
        case,
        topology,
        weights,
        batches,
        simulation,
        {},
        to_plain(attack.config),
        knowledge,
    )
    for attacker, victim in topology.directed_pairs():
        # The attacker's side: the victim's message, its belief of the model, the grants.
        update = simulation.messages[last][victim].update
        view, how = attacker_view(attacker, victim, last, simulation, topology, weights)
        seed = attacker_seed(plan.seed, attacker)
        attacked = ServerView(_module(server.model, view), knowledge[victim])
        rec = attack.reconstruct(
            update, attacked.model, attacked.knowledge, seed=seed, progress=plan.output.progress
        )
        # The evaluation side: the victim's batch and true model.
        evaluation = score(attacked, batches[victim], rec)
        error = _model_error(view, simulation.models[last][victim], names)
        pair = PairResult(attacker, victim, seed, how, error, rec, evaluation)
        result.pairs[attacker, victim] = pair
        if on_pair is not None:
            on_pair(pair)
        if rec.interrupted:  # Ctrl-C ends the whole simulation; what is done is written
            result.interrupted = True
            break
    if out_dir is not None:
        try:
            with output_dir(out_dir, overwrite=overwrite) as folder:
                write_outputs(result, folder)
        except OSError as exc:
            raise GradleakError(f"cannot write the output directory {out_dir}: {exc}") from exc
        result.out_dir = out_dir
    return result


def markdown_tables(result: DecentralizedResult) -> str:
    """The P×P PSNR table (rows attacker, columns victim) and each victim's best attacker."""
    peers = range(result.topology.peers)
    lines = [
        "PSNR (dB) of each attacker's (row) reconstruction of each neighbour's (column) "
        "update; blank: not neighbours",
        "",
        "| attacker \\ victim | " + " | ".join(str(v) for v in peers) + " |",
        "|---|" + "---:|" * len(peers),
    ]
    for a, row in zip(peers, result.psnr_table(), strict=True):
        cells = ["" if value is None else f"{value:.2f}" for value in row]
        lines.append(f"| {a} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| victim | best attacker | PSNR (dB) | SSIM | label accuracy |",
        "|---|---|---:|---:|---:|",
    ]
    for victim, pair in result.best_per_victim().items():
        ev = pair.evaluation
        ssim = "n/a" if ev.ssim is None else f"{ev.ssim:.4f}"
        labels = "n/a" if ev.label_accuracy is None else f"{ev.label_accuracy:.2f}"
        lines.append(f"| {victim} | {pair.attacker} | {ev.psnr:.2f} | {ssim} | {labels} |")
    return "\n".join(lines) + "\n"


def write_outputs(result: DecentralizedResult, out_dir: Path) -> None:
    """simulation.json, .csv and .md, grid.png (all attacks) and best.png (best per victim)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [pair.row() for pair in result.pairs.values()]
    config = result.config
    summary = {
        **config.describe(),
        "source": result.case.client.source,
        "attack_config": result.attack_config,
        "graph": result.topology.describe(),
        "gossip_weights": result.weights.tolist(),
        "threat_model": result.knowledge[0].describe(),
        "true_labels": {str(i): batch.labels.tolist() for i, batch in enumerate(result.batches)},
        "pairs": [
            {
                **pair.row(),
                "recovered_labels": None
                if pair.reconstruction.labels is None
                else pair.reconstruction.labels.tolist(),
                "matching": pair.evaluation.matching,
                "per_image": pair.evaluation.per_image,
            }
            for pair in result.pairs.values()
        ],
        "psnr_table": result.psnr_table(),
        "best_per_victim": {str(v): p.attacker for v, p in result.best_per_victim().items()},
        "interrupted": result.interrupted,
        "convention": result.case.server.modality.convention,
    }
    text = json.dumps(to_plain(summary), indent=2, allow_nan=False)
    write_atomically(out_dir / "simulation.json", text + "\n")
    write_csv(out_dir / "simulation.csv", list(rows[0]) if rows else ["attacker"], rows)
    write_atomically(out_dir / "simulation.md", markdown_tables(result))
    if result.pairs:
        _save_attack_grid(result, out_dir / "grid.png")
        best = result.best_per_victim()
        truths = torch.cat([result.case.server.decode(result.batches[v].images) for v in best])
        recons = torch.cat([_matched_pixels(result, p) for p in best.values()])
        save_comparison_grid(
            truths, recons, out_dir / "best.png", matching=list(range(len(truths)))
        )


def _matched_pixels(result: DecentralizedResult, pair: PairResult) -> torch.Tensor:
    """The pair's reconstruction in [0, 1], ordered like the victim's images."""
    pixels = result.case.server.decode(pair.reconstruction.images).nan_to_num(0.0)
    return pixels[pair.evaluation.matching]


def _save_attack_grid(result: DecentralizedResult, path: Path) -> None:
    """Top row: every victim's images; row 1 + j: what attacker j reconstructed of each."""
    peers = range(result.topology.peers)
    truth = [
        to_pil(image)
        for v in peers
        for image in result.case.server.decode(result.batches[v].images)
    ]
    blank = Image.new(
        truth[0].mode, truth[0].size, 255 if truth[0].mode == "L" else (255, 255, 255)
    )
    b = result.config.run.batch_size
    rows = [truth]
    for a in peers:
        row = []
        for v in peers:
            pair = result.pairs.get((a, v))
            row += (
                [blank] * b if pair is None else [to_pil(x) for x in _matched_pixels(result, pair)]
            )
        rows.append(row)
    height = result.case.server.knowledge.data_shape[1]
    save_png(tile_rows(rows, resolve_scale(height, None)), path)
