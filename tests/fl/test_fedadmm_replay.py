"""The attacker's replay of the FedADMM client: on the true data it gives the shared update,
in round 1 and in later rounds from the client's state, for several users and local steps."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gradleak.attacks.matching.objectives import l2_distance
from gradleak.attacks.matching.problem import MatchingProblem, attacker_model
from gradleak.core.batch import PrivateBatch
from gradleak.core.errors import GradleakError
from gradleak.core.knowledge import ClientState, DataFacts, Grants, Knowledge, grant_knowledge
from gradleak.core.update import UpdateKind
from gradleak.fl import FedSGDClient, LocalTraining, ProtocolSettings, simulate
from gradleak.fl.fedadmm import ADMMReplay, FedADMMClient
from gradleak.fl.rounds import RoundResult
from gradleak.models import build_model

from .toy import FACTS, toy_batch, toy_model

pytestmark = pytest.mark.usefixtures("one_thread")


def _attacked(
    model: nn.Module, batch: PrivateBatch, settings: ProtocolSettings, grants: Grants
) -> tuple[RoundResult, Knowledge]:
    """The rounds as they ran, and the attacker's knowledge of the last one."""
    result = simulate(model, batch, settings)
    states = settings.client_states(result.clients)
    return result, grant_knowledge(FACTS, batch.labels, settings, grants, states)


def _problem(result: RoundResult, knowledge: Knowledge, settings: ProtocolSettings):  # noqa: ANN202
    replay = settings.protocol.replay(knowledge, "test")
    target = dict(replay.read(result.update).tensors)
    model = attacker_model(result.server_model, "train")
    return MatchingProblem(model, target, l2_distance, 0.0, replay), target


SETTINGS = [
    ProtocolSettings("fedadmm", LocalTraining(lr=0.3), rho=1.0),
    ProtocolSettings("fedadmm", LocalTraining(lr=0.3, steps=3, batch_size=1), rho=0.7),
    ProtocolSettings("fedadmm", LocalTraining(lr=0.2, steps=2), users=2, rho=2.0, rounds=2),
    ProtocolSettings(
        "fedadmm", LocalTraining(lr=0.3, steps=3, batch_size=1), users=2, rho=0.7, rounds=2
    ),
    ProtocolSettings(
        "fedadmm", LocalTraining(lr=0.2, epochs=2, batch_size=2), users=2, rho=1.5, rounds=3
    ),
]
IDS = ["round1", "round1-3steps", "round2-2users", "round2-3steps-2users", "round3-epochs"]


@pytest.mark.parametrize("settings", SETTINGS, ids=IDS)
def test_the_replay_of_the_true_data_is_the_shared_update(settings: ProtocolSettings) -> None:
    model, batch = toy_model(1), toy_batch(4 if settings.users == 2 else 2, seed=2)
    result, knowledge = _attacked(model, batch, settings, Grants(client_state_known=True))
    problem, target = _problem(result, knowledge, settings)
    # torch.func's grad (the stacked, compilable path).
    candidate = problem.candidate_update(problem.params, batch.images, batch.labels)
    assert candidate.keys() == target.keys()
    for name, tensor in target.items():
        torch.testing.assert_close(candidate[name], tensor, rtol=1e-10, atol=1e-12)
    assert float(problem.loss(batch.images, batch.labels)) < 1e-20
    # Autograd's create_graph (the single-trial path).
    _, value = problem.value_and_grad(batch.images, batch.labels)
    assert float(value) < 1e-20


def test_the_replay_matches_lenet_clients_in_float32() -> None:
    model = build_model("lenet", num_classes=10, seed=3)
    g = torch.Generator().manual_seed(4)
    batch = PrivateBatch(torch.randn(4, 3, 32, 32, generator=g), torch.tensor([1, 5, 7, 2]))
    settings = ProtocolSettings(
        "fedadmm", LocalTraining(lr=0.05, steps=2, batch_size=1), users=2, rounds=2
    )
    result = simulate(model, batch, settings)
    facts = DataFacts((3, 32, 32), 10, (0.5,) * 3, (0.5,) * 3)
    states = settings.client_states(result.clients)
    grants = Grants(client_state_known=True)
    knowledge = grant_knowledge(facts, batch.labels, settings, grants, states)
    problem, target = _problem(result, knowledge, settings)
    candidate = problem.candidate_update(problem.params, batch.images, batch.labels)
    for name, tensor in target.items():
        torch.testing.assert_close(candidate[name], tensor, rtol=1e-4, atol=1e-5)


def test_autograd_and_functional_replays_agree_on_loss_and_image_gradient() -> None:
    settings = ProtocolSettings("fedadmm", LocalTraining(lr=0.2, steps=2), users=2, rounds=2)
    model, batch = toy_model(3), toy_batch(4, seed=5)
    result, knowledge = _attacked(model, batch, settings, Grants(client_state_known=True))
    problem, _ = _problem(result, knowledge, settings)
    candidate = toy_batch(4, seed=9).images
    (by_autograd,), value = problem.value_and_grad(candidate, batch.labels)
    func_grad, func_value = torch.func.grad_and_value(problem.loss)(candidate, batch.labels)
    torch.testing.assert_close(value, func_value.detach())
    torch.testing.assert_close(by_autograd, func_grad, rtol=1e-9, atol=1e-12)
    assert float(value) > 1e-8  # other data than the truth: a real comparison


def test_replaying_round_two_from_round_ones_start_does_not_match() -> None:
    # The client's x and π after round 1 are not z and 0: a replay that assumed them would
    # attack another computation than the client's.
    settings = ProtocolSettings("fedadmm", LocalTraining(lr=0.3, steps=2), rounds=2)
    model, batch = toy_model(2), toy_batch(2, seed=3)
    result, knowledge = _attacked(model, batch, settings, Grants(client_state_known=True))
    assert knowledge.admm is not None
    right, target = _problem(result, knowledge, settings)
    wrong = ADMMReplay(1, settings.local, read_scale=-1 / 0.3, rho=1.0, samples_per_user=2)
    candidate = MatchingProblem(right.model, target, l2_distance, 0.0, wrong)
    assert float(right.loss(batch.images, batch.labels)) < 1e-20
    assert float(candidate.loss(batch.images, batch.labels)) > 1e-4


def test_a_wrong_belief_of_rho_does_not_match() -> None:
    settings = ProtocolSettings("fedadmm", LocalTraining(lr=0.3, steps=3), rho=1.0)
    model, batch = toy_model(2), toy_batch(2, seed=3)
    result, known = _attacked(model, batch, settings, Grants())
    _, guessed = _attacked(model, batch, settings, Grants(rho_guess=5.0))
    assert guessed.admm is not None and guessed.admm.rho == 5.0 and guessed.admm.rho_guessed
    right, _ = _problem(result, known, settings)
    wrong, _ = _problem(result, guessed, settings)
    assert float(right.loss(batch.images, batch.labels)) < 1e-20
    assert float(wrong.loss(batch.images, batch.labels)) > 1e-6


def test_a_server_that_saw_the_increments_can_compute_the_clients_state() -> None:
    # Δ = (x' + π'/ρ) − (x + π/ρ) with π' = π + ρ(x' − z) gives Δ = 2x' − x − z, so
    # x' = (Δ + x + z)/2 and π' = π + ρ(x' − z): from x = z, π = 0 the server that received
    # the client's own increments follows its state round by round (why the threat model
    # may grant it).
    rho, local = 0.8, LocalTraining(lr=0.2, steps=3, batch_size=1)
    model, batch = toy_model(6), toy_batch(2, seed=7)
    client = FedADMMClient(model, local, rho=rho)
    z = {n: p.detach().clone() for n, p in model.named_parameters()}
    x = {n: t.clone() for n, t in z.items()}
    pi = {n: torch.zeros_like(t) for n, t in z.items()}
    server = toy_model(6)
    for _ in range(3):
        update = client.compute_update(batch, server)
        for name, delta in update.tensors.items():
            x[name] = (delta + x[name] + z[name]) / 2
            pi[name] = pi[name] + rho * (x[name] - z[name])
        for name, p in client.model.named_parameters():
            torch.testing.assert_close(x[name], p.detach(), rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(pi[name], client.dual[name], rtol=1e-10, atol=1e-12)
        with torch.no_grad():  # the server's step with one user: z + Δ
            for name, p in server.named_parameters():
                p.add_(update.tensors[name])
                z[name] = p.detach().clone()


def test_the_client_records_its_state_at_the_start_of_each_round() -> None:
    settings = ProtocolSettings("fedadmm", LocalTraining(lr=0.3), rounds=2)
    model, batch = toy_model(4), toy_batch(2)
    first = simulate(model, batch, ProtocolSettings("fedadmm", LocalTraining(lr=0.3)))
    (start1,) = settings.client_states(first.clients)
    for name, p in model.named_parameters():
        torch.testing.assert_close(start1.primal[name], p.detach(), rtol=0, atol=0)
        assert not start1.dual[name].any()
    second = simulate(model, batch, settings)
    (start2,) = settings.client_states(second.clients)
    # Round 2 starts where round 1 ended: the first run's client after its round.
    (client,) = first.clients
    for name, p in client.model.named_parameters():  # type: ignore[attr-defined]
        torch.testing.assert_close(start2.primal[name], p.detach(), rtol=0, atol=0)
        torch.testing.assert_close(start2.dual[name], client.dual[name], rtol=0, atol=0)  # type: ignore[attr-defined]
    assert ProtocolSettings("fedavg").client_states(first.clients) is None


# --- the label reading ----------------------------------------------------------------------


@pytest.mark.parametrize("rounds", [1, 2, 3])
def test_the_label_reading_of_one_local_step_is_the_clients_gradient(rounds: int) -> None:
    # One step: −Δ/η = 2(∇f(x) + π + ρ(x − z)) − (x − z)/η; the replay takes the known
    # start's terms away, which leaves the gradient at the client's x exactly.
    settings = ProtocolSettings("fedadmm", LocalTraining(lr=0.3), rho=0.6, rounds=rounds)
    model, batch = toy_model(8), toy_batch(1, seed=rounds)
    result, knowledge = _attacked(model, batch, settings, Grants(client_state_known=True))
    replay = settings.protocol.replay(knowledge, "test")
    reading = replay.label_reading(result.update, result.server_model)
    assert reading.kind is UpdateKind.ADMM_INCREMENT  # read for its signs only
    (state,) = settings.client_states(result.clients)  # type: ignore[misc]
    at_x = toy_model(8)
    with torch.no_grad():
        for name, p in at_x.named_parameters():
            p.copy_(state.primal[name])
    gradient = FedSGDClient(at_x).compute_update(batch).tensors
    for name, g in gradient.items():
        torch.testing.assert_close(reading.tensors[name], g, rtol=1e-8, atol=1e-12)
    if rounds > 1:  # −Δ is not a multiple of the gradient any more
        raw, bias = -result.update.tensors["3.bias"], gradient["3.bias"]
        assert not torch.allclose(raw / raw.abs().max(), bias / bias.abs().max(), atol=1e-3)


def test_the_label_reading_of_round_one_is_the_increment_over_two_s_eta() -> None:
    settings = ProtocolSettings("fedadmm", LocalTraining(lr=0.1, steps=3))
    model, batch = toy_model(9), toy_batch(2, seed=4)
    result, knowledge = _attacked(model, batch, settings, Grants())
    replay = settings.protocol.replay(knowledge, "test")
    reading = replay.label_reading(result.update, result.server_model)
    for name, delta in result.update.tensors.items():
        torch.testing.assert_close(reading.tensors[name], -delta / (2 * 3 * 0.1))


# --- what the threat model must grant -------------------------------------------------------


def test_a_later_round_without_the_clients_state_is_refused_in_one_line() -> None:
    settings = ProtocolSettings("fedadmm", LocalTraining(lr=0.1), rounds=2)
    model, batch = toy_model(), toy_batch(1)
    _, knowledge = _attacked(model, batch, settings, Grants())
    assert knowledge.admm is not None and knowledge.admm.states is None
    with pytest.raises(GradleakError) as exc:
        settings.protocol.replay(knowledge, "attack 'dlg-admm'")
    message = str(exc.value)
    assert "\n" not in message
    assert message.startswith("attack 'dlg-admm' needs admm_state")
    assert "start of round 2 with --client-state-known" in message
    # The gradient reading does not start from the state: it runs.
    settings.protocol.reading("gradient").replay(knowledge, "attack 'dlg-admm'")
    # Before any data is read, the settings say the same.
    with pytest.raises(GradleakError, match="add --client-state-known") as exc:
        settings.check_reading(Grants(), "dlg-admm")
    assert "admm_reading: gradient" in str(exc.value)
    settings.check_reading(Grants(client_state_known=True), "dlg-admm")
    settings.check_reading(Grants(), "dlg-admm", "gradient")
    ProtocolSettings("fedadmm", LocalTraining(lr=0.1)).check_reading(Grants(), "dlg-admm")


def test_the_state_reaches_the_attacker_only_when_granted() -> None:
    settings = ProtocolSettings("fedadmm", LocalTraining(lr=0.1), rounds=2)
    model, batch = toy_model(), toy_batch(1)
    result = simulate(model, batch, settings)
    states = settings.client_states(result.clients)
    hidden = grant_knowledge(FACTS, batch.labels, settings, Grants(), states)
    assert hidden.admm is not None and hidden.admm.states is None
    assert hidden.describe()["admm"]["client_state"] == "not granted"
    grants = Grants(client_state_known=True)
    granted = grant_knowledge(FACTS, batch.labels, settings, grants, states)
    assert granted.admm is not None and granted.admm.states is not None
    described = granted.describe()
    assert described["attacked_round"] == 2
    assert described["admm"] == {
        "rho": 1.0,
        "rho_guessed": False,
        "client_state": "granted: each user's x and π at the start of round 2",
    }
    replay = settings.protocol.replay(granted, "test").describe()
    assert replay["client_state"] == "granted x and π per user" and replay["rho"] == 1.0
    first = grant_knowledge(FACTS, batch.labels, ProtocolSettings("fedadmm"), Grants())
    assert first.describe()["admm"]["client_state"] == "round 1: x = z, π = 0 (public)"
    assert grant_knowledge(FACTS, batch.labels, ProtocolSettings()).describe()["admm"] is None


@pytest.mark.parametrize(
    ("grants", "message"),
    [
        (Grants(rho_guess=2.0), "--guess-admm-rho guesses ADMM's penalty, which fedavg does"),
        (Grants(client_state_known=True), "--client-state-known grants the state clients keep"),
    ],
)
def test_admm_grants_for_other_protocols_are_refused(grants: Grants, message: str) -> None:
    with pytest.raises(GradleakError, match=message) as exc:
        grant_knowledge(FACTS, torch.tensor([1]), ProtocolSettings("fedavg"), grants)
    assert str(exc.value).endswith("--protocol fedadmm")


def test_client_states_must_cover_every_user() -> None:
    state = ClientState({"w": torch.zeros(2)}, {"w": torch.zeros(2)})
    with pytest.raises(GradleakError, match="1 client states granted for 2 users"):
        grant_knowledge(
            FACTS,
            torch.tensor([0, 1]),
            ProtocolSettings("fedadmm", users=2, rounds=2),
            Grants(client_state_known=True),
            [state],
        )
    with pytest.raises(GradleakError, match="x and π for the same parameters"):
        ClientState({"w": torch.zeros(2)}, {"v": torch.zeros(2)})
