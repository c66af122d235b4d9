"""The protocol registry: what each protocol's clients share, how its updates step a model,
how the attacker replays it on the true data, and what the attacker may guess of it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gradleak.attacks.matching.objectives import cosine_distance, l2_distance
from gradleak.attacks.matching.problem import MatchingProblem, attacker_model
from gradleak.core.batch import PrivateBatch
from gradleak.core.errors import GradleakError
from gradleak.core.knowledge import Grants, Knowledge, grant_knowledge
from gradleak.core.update import SharedUpdate, UpdateKind
from gradleak.fl import FedSGDClient, LocalTraining
from gradleak.fl.protocols import (
    DEFAULT_LOCAL_LR,
    PROTOCOLS,
    ProtocolSettings,
    get_protocol,
    protocol_sharing,
    protocols_read_by,
)
from gradleak.fl.replay import Replay

from .toy import CLASSES, FACTS, SHAPE, toy_batch, toy_model

pytestmark = pytest.mark.usefixtures("one_thread")


def _shared_by_users(
    model: nn.Module, batch: PrivateBatch, settings: ProtocolSettings
) -> dict[str, torch.Tensor]:
    """What the server sees, computed here: user i's client on the i-th share, then the mean."""
    n = len(batch) // settings.users
    updates = [
        settings.client(model).compute_update(
            PrivateBatch(batch.images[i * n : (i + 1) * n], batch.labels[i * n : (i + 1) * n])
        )
        for i in range(settings.users)
    ]
    names = updates[0].tensors
    return {name: torch.stack([u.tensors[name] for u in updates]).mean(0) for name in names}


def _replayed(
    model: nn.Module, batch: PrivateBatch, replay: Replay, target: dict[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], MatchingProblem]:
    """The replay run on the true data through torch.func, and its matching problem."""
    problem = MatchingProblem(attacker_model(model, "train"), target, l2_distance, 0.0, replay)
    return problem.candidate_update(problem.params, batch.images, batch.labels), problem


# --- the registry -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(PROTOCOLS))
def test_every_protocols_client_shares_the_protocols_kind(name: str) -> None:
    protocol = PROTOCOLS[name]
    settings = ProtocolSettings(name)
    client = protocol.new_client(toy_model(), settings)
    update = client.compute_update(toy_batch(2))
    assert update.kind is protocol.shares
    assert update.metadata["protocol"] == name
    assert update.num_samples == 2
    # ProtocolSettings.client builds the same kind of client.
    assert type(settings.client(toy_model())) is type(client)


def test_protocol_sharing_is_the_inverse_of_shares() -> None:
    assert {p.shares for p in PROTOCOLS.values()} == set(UpdateKind)
    for protocol in PROTOCOLS.values():
        assert protocol_sharing(protocol.shares) is protocol
    assert protocol_sharing(UpdateKind.GRADIENT).name == "fedsgd"
    assert protocol_sharing(UpdateKind.WEIGHT_DELTA).name == "fedavg"
    assert protocol_sharing(UpdateKind.ADMM_INCREMENT).name == "fedadmm"


def test_protocols_read_by_keeps_registry_order() -> None:
    kinds = frozenset({UpdateKind.WEIGHT_DELTA, UpdateKind.GRADIENT})
    assert [p.name for p in protocols_read_by(kinds)] == ["fedsgd", "fedavg"]
    assert [p.name for p in protocols_read_by(frozenset({UpdateKind.ADMM_INCREMENT}))] == [
        "fedadmm"
    ]
    assert protocols_read_by(frozenset()) == []


def test_registry_flags() -> None:
    fedsgd, fedavg, fedadmm = (PROTOCOLS[n] for n in ("fedsgd", "fedavg", "fedadmm"))
    assert not fedsgd.moves_model and fedavg.moves_model and fedadmm.moves_model
    assert fedsgd.peer_to_peer and fedavg.peer_to_peer and not fedadmm.peer_to_peer
    assert not fedsgd.trains_locally and fedavg.trains_locally and fedadmm.trains_locally
    assert fedadmm.penalised and not fedavg.penalised and not fedsgd.penalised


def test_an_unknown_protocol_is_a_one_line_error_naming_the_choices() -> None:
    with pytest.raises(GradleakError, match="'fedprox' is not one of: fedsgd, fedavg, fedadmm"):
        get_protocol("fedprox")
    with pytest.raises(GradleakError, match="'fedprox' is not one of"):
        ProtocolSettings("fedprox")


# --- step semantics ---------------------------------------------------------------------------


def test_fedsgd_steps_against_the_gradient_others_add_the_update() -> None:
    param = torch.tensor([1.0, -2.0, 0.5])
    update = torch.tensor([0.5, 1.0, -4.0])
    torch.testing.assert_close(
        PROTOCOLS["fedsgd"].step(param, update, 0.1), torch.tensor([0.95, -2.1, 0.9])
    )
    for name in ("fedavg", "fedadmm"):
        # The step size is ignored: a difference is added as it is.
        moved = PROTOCOLS[name].step(param, update, 0.1)
        torch.testing.assert_close(moved, torch.tensor([1.5, -1.0, -3.5]))


# --- settings ---------------------------------------------------------------------------------


def test_several_rounds_of_fedsgd_are_refused() -> None:
    with pytest.raises(GradleakError, match="use --protocol fedavg or fedadmm") as exc:
        ProtocolSettings("fedsgd", rounds=2)
    assert "\n" not in str(exc.value)
    assert ProtocolSettings("fedavg", rounds=2).rounds == 2


def test_local_training_defaults_only_where_the_protocol_trains_locally() -> None:
    assert ProtocolSettings("fedsgd").local is None
    for name in ("fedavg", "fedadmm"):
        assert ProtocolSettings(name).local == LocalTraining(lr=DEFAULT_LOCAL_LR)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"users": 0}, "--users must be at least 1"),
        ({"rho": 0.0}, "rho must be positive"),
        ({"rho": float("inf")}, "rho must be positive"),
        ({"rounds": 0}, "rounds must be at least 1"),
    ],
)
def test_impossible_settings_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(GradleakError, match=message):
        ProtocolSettings("fedadmm", **kwargs)


# --- replay on the true data gives the shared update ------------------------------------------


@pytest.mark.parametrize(
    ("settings", "size"),
    [
        (ProtocolSettings("fedsgd"), 3),
        (ProtocolSettings("fedsgd", users=2), 4),
        (ProtocolSettings("fedavg", LocalTraining(lr=0.3)), 3),
        (ProtocolSettings("fedavg", LocalTraining(lr=0.3, steps=2, batch_size=1)), 3),
        (ProtocolSettings("fedavg", LocalTraining(lr=0.3, steps=2, batch_size=1), users=2), 4),
        (ProtocolSettings("fedavg", LocalTraining(lr=0.2, epochs=2, batch_size=2), users=2), 6),
    ],
    ids=["fedsgd", "fedsgd-2users", "fedavg", "fedavg-2steps-b1", "fedavg-2users", "epochs"],
)
def test_the_protocols_replay_of_the_true_data_is_the_shared_update(
    settings: ProtocolSettings, size: int
) -> None:
    model, batch = toy_model(1), toy_batch(size, seed=2)
    shared = _shared_by_users(model, batch, settings)
    knowledge = grant_knowledge(FACTS, batch.labels, settings)
    replay = settings.protocol.replay(knowledge, "test")
    assert replay.users == settings.users
    assert replay.local == settings.local
    assert replay.read_scale is None
    candidate, problem = _replayed(model, batch, replay, shared)
    assert candidate.keys() == shared.keys()
    for name, tensor in shared.items():
        torch.testing.assert_close(candidate[name], tensor, rtol=1e-10, atol=1e-12)
    assert float(problem.loss(batch.images, batch.labels)) < 1e-20


def test_a_replay_that_ignores_the_users_does_not_give_the_shared_update() -> None:
    model, batch = toy_model(1), toy_batch(4, seed=2)
    settings = ProtocolSettings("fedavg", LocalTraining(lr=0.3, steps=2, batch_size=1), users=2)
    shared = _shared_by_users(model, batch, settings)
    one_user = Replay(1, settings.local)
    candidate, _ = _replayed(model, batch, one_user, shared)
    assert float(l2_distance(candidate, shared)) > 1e-6


def test_fedsgd_over_two_users_is_the_mean_of_their_gradients() -> None:
    model, batch = toy_model(3), toy_batch(4, seed=4)
    shared = _shared_by_users(model, batch, ProtocolSettings("fedsgd", users=2))
    halves = [
        FedSGDClient(model).compute_update(PrivateBatch(batch.images[s], batch.labels[s]))
        for s in (slice(0, 2), slice(2, 4))
    ]
    whole = FedSGDClient(model).compute_update(batch)
    for name, tensor in shared.items():
        torch.testing.assert_close(
            tensor, (halves[0].tensors[name] + halves[1].tensors[name]) / 2, rtol=1e-14, atol=1e-16
        )
        # Equal shares of mean losses: the mean of the users' gradients is the whole
        # batch's gradient as well.
        torch.testing.assert_close(tensor, whole.tensors[name], rtol=1e-10, atol=1e-14)


def test_fedavg_replay_needs_a_belief_of_the_local_training() -> None:
    knowledge = Knowledge(SHAPE, CLASSES, 1, FACTS.mean, FACTS.std)
    for name in ("fedavg", "fedadmm"):
        with pytest.raises(GradleakError, match="attack 'x' needs local_training"):
            PROTOCOLS[name].replay(knowledge, "attack 'x'")
    assert PROTOCOLS["fedsgd"].replay(knowledge, "attack 'x'") == Replay(1)


# --- FedADMM: the gradient reading, kept for contrast with the replay -----------------------


def test_fedadmm_gradient_reading_reads_minus_the_increment_over_the_local_rate() -> None:
    model, batch = toy_model(5), toy_batch(2, seed=6)
    eta = 0.05
    settings = ProtocolSettings("fedadmm", LocalTraining(lr=eta, steps=1), rho=3.0)
    update = settings.client(model).compute_update(batch)
    knowledge = grant_knowledge(FACTS, batch.labels, settings)
    replay = settings.protocol.reading("gradient").replay(knowledge, "test")
    assert replay.read_scale == pytest.approx(-1.0 / eta)
    assert replay.is_plain_gradient  # one gradient is replayed, no local steps
    read = replay.read(update)
    assert read.kind is UpdateKind.GRADIENT
    gradient = FedSGDClient(model).compute_update(batch).tensors
    for name, delta in update.tensors.items():
        torch.testing.assert_close(read.tensors[name], -delta / eta, rtol=1e-12, atol=0)
        # Round 1, one step from x = z, π = 0: x − z = −η∇f and π/ρ = −η∇f, so Δ = −2η∇f
        # whatever ρ: −Δ/η is twice the true gradient.
        torch.testing.assert_close(read.tensors[name], 2 * gradient[name], rtol=1e-10, atol=1e-14)


def test_the_gradient_reading_has_no_zero_of_the_l2_loss_the_replay_has() -> None:
    # The gradient reading matches −Δ/η with one replayed gradient. At the true data in
    # round 1 that compares ∇f with 2∇f: the cosine distance is zero, the L2 distance is
    # ‖∇f‖². The replay of the client puts both sides through the same round: zero.
    model, batch = toy_model(5), toy_batch(1, seed=7)
    eta = 0.05
    settings = ProtocolSettings("fedadmm", LocalTraining(lr=eta, steps=1))
    update = settings.client(model).compute_update(batch)
    knowledge = grant_knowledge(FACTS, batch.labels, settings)
    plain = settings.protocol.reading("gradient").replay(knowledge, "test")
    read = dict(plain.read(update).tensors)
    candidate, _ = _replayed(model, batch, plain, read)
    gradient = FedSGDClient(model).compute_update(batch).tensors
    squared_norm = sum(float(g.pow(2).sum()) for g in gradient.values())
    assert float(l2_distance(candidate, read)) == pytest.approx(squared_norm, rel=1e-9)
    assert squared_norm > 1e-4
    assert abs(float(cosine_distance(candidate, read))) < 1e-10

    replay = settings.protocol.replay(knowledge, "test")
    target = dict(replay.read(update).tensors)
    replayed, problem = _replayed(model, batch, replay, target)
    assert float(l2_distance(replayed, target)) < 1e-20
    # −Δ'/η of the replay is 2∇f as well: the same quantity on both sides.
    for name, g in gradient.items():
        torch.testing.assert_close(replayed[name], 2 * g, rtol=1e-10, atol=1e-14)


def test_fedadmm_readings_and_what_they_read() -> None:
    fedadmm = PROTOCOLS["fedadmm"]
    assert [r.name for r in fedadmm.readings] == ["replay", "gradient"]
    assert fedadmm.replay is fedadmm.reading("replay").replay
    assert fedadmm.belief_used == {"steps", "epochs", "batch_size", "lr", "rho"}
    assert fedadmm.reading("gradient").belief_used == {"lr"}
    assert fedadmm.reading("replay").needs_client_state
    for name in ("fedsgd", "fedavg"):
        assert [r.name for r in PROTOCOLS[name].readings] == ["replay"]
    with pytest.raises(GradleakError, match="fedavg updates are read as: replay; not 'gradient'"):
        PROTOCOLS["fedavg"].reading("gradient")


# --- the attacker's belief --------------------------------------------------------------------


def test_without_guesses_the_attacker_knows_the_local_training() -> None:
    local = LocalTraining(lr=0.2, steps=3, batch_size=2)
    settings = ProtocolSettings("fedavg", local)
    assert settings.attacker_belief(Grants(), 4) == (local, False)
    assert ProtocolSettings("fedsgd").attacker_belief(Grants(), 4) == (None, False)


@pytest.mark.parametrize(
    ("truth", "guess", "belief"),
    [
        (
            LocalTraining(lr=0.2, epochs=2, batch_size=2),
            {"steps": 3},
            LocalTraining(lr=0.2, steps=3, batch_size=2),
        ),
        (
            LocalTraining(lr=0.2, steps=5, batch_size=2),
            {"epochs": 1},
            LocalTraining(lr=0.2, epochs=1, batch_size=2),
        ),
        (
            LocalTraining(lr=0.2, steps=5, batch_size=2),
            {"lr": 0.7},
            LocalTraining(lr=0.7, steps=5, batch_size=2),
        ),
        (
            LocalTraining(lr=0.2, epochs=3),
            {"batch_size": 1, "lr": 0.1},
            LocalTraining(lr=0.1, epochs=3, batch_size=1),
        ),
    ],
    ids=["steps-replace-epochs", "epochs-replace-steps", "lr-only", "batch-and-lr"],
)
def test_guesses_replace_their_settings(
    truth: LocalTraining, guess: dict, belief: LocalTraining
) -> None:
    settings = ProtocolSettings("fedavg", truth)
    assert settings.attacker_belief(Grants(local_guess=guess), 4) == (belief, True)


def test_a_guessed_batch_larger_than_a_users_samples_is_refused() -> None:
    settings = ProtocolSettings("fedavg", LocalTraining(lr=0.1))
    with pytest.raises(GradleakError) as exc:
        settings.attacker_belief(Grants(local_guess={"batch_size": 3}), 2)
    message = str(exc.value)
    assert "local batch size 3 is larger than the client's 2 samples" in message
    assert "use --guess-local-batch-size 2 or fewer" in message
    assert settings.attacker_belief(Grants(local_guess={"batch_size": 2}), 2)[1]


@pytest.mark.parametrize("key", ["steps", "epochs", "batch_size", "lr"])
def test_fedsgd_refuses_any_guess(key: str) -> None:
    value = 0.1 if key == "lr" else 1
    flag = "--guess-local-" + key.replace("_", "-")
    with pytest.raises(GradleakError) as exc:
        ProtocolSettings("fedsgd").attacker_belief(Grants(local_guess={key: value}), 1)
    message = str(exc.value)
    assert message.startswith(f"{flag} guesses local training, which fedsgd does not do")
    assert message.endswith("use --protocol fedavg or fedadmm")


@pytest.mark.parametrize("key", ["steps", "epochs", "batch_size"])
def test_the_fedadmm_gradient_reading_refuses_guesses_it_ignores(key: str) -> None:
    settings = ProtocolSettings("fedadmm", LocalTraining(lr=0.1))
    flag = "--guess-local-" + key.replace("_", "-")
    grants = Grants(local_guess={key: 1})
    with pytest.raises(GradleakError) as exc:
        settings.refuse_ignored_guesses(grants, "dlg-admm", "gradient")
    message = str(exc.value)
    assert message.startswith("dlg-admm with admm_reading gradient uses only the local learning")
    assert f"drop {flag} (use --guess-local-lr)" in message
    with pytest.raises(GradleakError, match="drop --guess-admm-rho"):
        settings.refuse_ignored_guesses(Grants(rho_guess=2.0), "dlg-admm", "gradient")
    lr = Grants(local_guess={"lr": 0.2})
    settings.refuse_ignored_guesses(lr, "dlg-admm", "gradient")  # read: accepted
    # The replay reads the whole local schedule and ρ: every guess counts.
    settings.refuse_ignored_guesses(grants, "dlg-admm")
    settings.check_reading(Grants(local_guess={key: 1}, rho_guess=2.0), "dlg-admm")


def test_fedavg_reads_every_guess_and_fedsgd_has_none_to_ignore() -> None:
    every = Grants(local_guess={"steps": 2, "batch_size": 1, "lr": 0.1})
    ProtocolSettings("fedavg", LocalTraining(lr=0.1)).refuse_ignored_guesses(every, "dlg")
    # fedsgd's replay reads no belief; its guesses are refused by attacker_belief instead.
    ProtocolSettings("fedsgd").refuse_ignored_guesses(every, "dlg")


def test_shared_update_kind_is_what_the_replay_reads() -> None:
    # The update the attacker holds names its kind; the registry maps it to its replay.
    model, batch = toy_model(), toy_batch(2)
    for protocol in PROTOCOLS.values():
        update = ProtocolSettings(protocol.name).client(model).compute_update(batch)
        assert isinstance(update, SharedUpdate)
        assert protocol_sharing(update.kind).replay is protocol.replay
