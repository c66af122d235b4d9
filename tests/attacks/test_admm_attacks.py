"""DLG-ADMM and iDLG-ADMM: the replay of the FedADMM client recovers what the plain gradient
reading cannot, later rounds need the clients' state, and runs record what was assumed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from gradleak import attacks
from gradleak.cli import app as cli
from gradleak.core.batch import PrivateBatch
from gradleak.core.errors import GradleakError
from gradleak.core.knowledge import DataFacts, Grants, Knowledge, grant_knowledge
from gradleak.core.update import SharedUpdate
from gradleak.fl import LocalTraining, ProtocolSettings, simulate
from gradleak.scenario import RunConfig
from gradleak.scenario.run import attack_case
from gradleak.studies.compare import AttackRun, Cell, CompareSpec, DatasetSource

pytestmark = pytest.mark.usefixtures("one_thread")

FACTS = DataFacts((1, 4, 4), 4, (0.5,), (0.5,))


def _round(rounds: int, grants: Grants) -> tuple[nn.Module, PrivateBatch, SharedUpdate, Knowledge]:
    """A small sigmoid MLP's FedADMM round on one 4×4 image (one local step, η 0.1)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Sigmoid(), nn.Linear(8, 4))
    g = torch.Generator().manual_seed(1)
    batch = PrivateBatch(torch.randn(1, 1, 4, 4, generator=g), torch.tensor([2]))
    settings = ProtocolSettings("fedadmm", LocalTraining(lr=0.1), rounds=rounds)
    result = simulate(model, batch, settings)
    states = settings.client_states(result.clients)
    knowledge = grant_knowledge(FACTS, batch.labels, settings, grants, states)
    return result.server_model, batch, result.update, knowledge


def _error(name: str, reading: str, rounds: int) -> float:
    model, batch, update, knowledge = _round(rounds, Grants(client_state_known=True))
    attack = attacks.get(name).with_options({"admm_reading": reading, "iterations": 50})
    result = attack.reconstruct(update, model, knowledge, progress=False)
    assert result.labels is not None and result.labels.tolist() == [2]
    return float((result.images - batch.images).pow(2).mean())


@pytest.mark.parametrize("name", ["dlg-admm", "idlg-admm"])
def test_the_replay_recovers_round_one_where_the_gradient_reading_fails(name: str) -> None:
    # Round 1, one step: the shared −Δ/η is 2∇f. The replay gives 2∇f' on the candidate, so
    # the truth is a zero of the distance; the gradient reading compares ∇f' with 2∇f.
    assert _error(name, "replay", 1) < 1e-6
    assert _error(name, "gradient", 1) > 1.0


def test_the_replay_recovers_round_two_from_the_granted_state() -> None:
    assert _error("idlg-admm", "replay", 2) < 1e-6


def test_round_two_without_the_state_is_refused_before_the_optimisation() -> None:
    model, _, update, knowledge = _round(2, Grants())
    attack = attacks.get("dlg-admm")
    with pytest.raises(GradleakError, match="needs admm_state") as exc:
        attack.reconstruct(update, model, knowledge, progress=False)
    assert "\n" not in str(exc.value) and "--client-state-known" in str(exc.value)
    # The gradient reading reads −Δ/η as it is: it needs no state.
    plain = attack.with_options({"admm_reading": "gradient", "iterations": 1})
    plain.reconstruct(update, model, knowledge, progress=False)


@pytest.mark.parametrize("reading", ["replay", "gradient"])
@pytest.mark.parametrize("strategy", ["count", "sign", "yin"])
def test_strategies_that_need_a_gradient_refuse_a_fedadmm_increment(
    strategy: str, reading: str
) -> None:
    model, _, update, knowledge = _round(1, Grants())
    options = {"label_strategy": strategy, "admm_reading": reading, "iterations": 1}
    attack = attacks.get("dlg-admm").with_options(options)
    message = f"label strategy '{strategy}' reads a gradient but the update is a admm_increment"
    with pytest.raises(GradleakError, match=message):
        attack.reconstruct(update, model, knowledge, progress=False)


def test_admm_reading_is_an_option_of_the_admm_attacks_only() -> None:
    with pytest.raises(GradleakError, match="admm_reading applies to FedADMM increments only"):
        attacks.get("dlg").with_options({"admm_reading": "gradient"})
    with pytest.raises(GradleakError, match="admm_reading 'both' is not one of: replay, gradient"):
        attacks.get("dlg-admm").with_options({"admm_reading": "both"})
    assert attacks.get("idlg-admm").config.admm_reading == "replay"


# --- runs: the bundled CIFAR-10 images on LeNet ---------------------------------------------


def _config(**changes: object) -> RunConfig:
    base: dict[str, object] = {
        "attack": "idlg-admm",
        "protocol": "fedadmm",
        "progress": False,
        "attack_options": {"iterations": 1, "lbfgs_inner_iterations": 1},
    }
    return RunConfig(**{**base, **changes})  # type: ignore[arg-type]


def test_idlg_admm_reads_round_twos_label_from_the_clients_state() -> None:
    # At η 0.01 the signs of −Δ/η in round 2 are 2∇f(x) − ∇f(z) and miss the label on about
    # half of these images; with the state's terms taken away the reading is ∇f(x).
    for index in range(8):
        config = _config(indices=(index,), local_lr=0.01, rounds=2, client_state_known=True)
        outcome = attack_case(config)
        labels = outcome.reconstruction.labels
        assert labels is not None
        assert labels.tolist() == outcome.case.client.batch.labels.tolist(), index


def test_a_run_records_the_state_and_rho_its_replay_assumed() -> None:
    outcome = attack_case(_config(rounds=2, client_state_known=True, guess_admm_rho=2.0))
    described = outcome.attacked.knowledge.describe()
    assert described["attacked_round"] == 2
    assert described["admm"] == {
        "rho": 2.0,
        "rho_guessed": True,
        "client_state": "granted: each user's x and π at the start of round 2",
    }
    replay = outcome.reconstruction.details["replay"]
    assert replay["rho"] == 2.0 and replay["client_state"] == "granted x and π per user"
    assert replay["reading"].startswith("the client's ADMM round replayed")
    first = attack_case(_config()).reconstruction.details["replay"]
    assert first["client_state"] == "round 1: x = z, π = 0"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"rounds": 2}, "replays the fedadmm client from its state at the start of round 2"),
        (
            {"guess_local_steps": 2, "attack_options": {"admm_reading": "gradient"}},
            "with admm_reading gradient uses only the local learning rate",
        ),
        ({"protocol": "fedavg", "attack": "dlg", "client_state_known": True}, "keep none"),
        ({"protocol": "fedsgd", "attack": "dlg", "guess_admm_rho": 2.0}, "--guess-admm-rho"),
    ],
)
def test_bad_threat_models_are_refused_when_the_run_is_checked(
    changes: dict[str, object], message: str
) -> None:
    with pytest.raises(GradleakError, match=message) as exc:
        _config(**changes).validate()
    assert "\n" not in str(exc.value)


def test_the_command_line_grants_the_state_and_picks_the_reading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    argv = ["attack", "--attack", "dlg-admm", "--protocol", "fedadmm", "--rounds", "2"]
    argv += ["--client-state-known", "--iterations", "1", "--out", str(out), "--no-progress"]
    assert cli.main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["threat_model"]["admm"]["client_state"].startswith("granted")
    plain = ["attack", "--attack", "dlg-admm", "--protocol", "fedadmm", "--rounds", "2"]
    plain += ["--admm-reading", "gradient", "--iterations", "1", "--no-progress"]
    assert cli.main([*plain, "--out", str(tmp_path / "plain")]) == 0
    assert cli.main(["attack", "--attack", "dlg-admm", "--protocol", "fedadmm", "--rounds", "2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "add --client-state-known" in err[0]


def test_the_comparison_grants_the_state_to_fedadmm_runs_only() -> None:
    spec = CompareSpec(
        (DatasetSource("cifar10"),), settings={"rounds": 2, "client_state_known": True}
    )
    fedsgd = spec.config(Cell(spec.datasets[0], 0, AttackRun("dlg", "fedsgd")))
    fedadmm = spec.config(Cell(spec.datasets[0], 0, AttackRun("dlg-admm", "fedadmm")))
    assert not fedsgd.client_state_known and fedadmm.client_state_known
    fedadmm.validate()
    spec.check()
