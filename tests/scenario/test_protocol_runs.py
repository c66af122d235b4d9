"""Runs under FedAvg, FedADMM and aggregation: settings, the attacker's guesses, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gradleak.cli.app import main
from gradleak.core.errors import GradleakError
from gradleak.fl import LocalTraining
from gradleak.scenario import RunConfig, build_case

pytestmark = pytest.mark.usefixtures("one_thread")


def test_attacker_knows_the_local_training_unless_it_guesses() -> None:
    config = RunConfig(protocol="fedavg", local_steps=5, local_lr=0.1)
    assert config.protocol_settings().attacker_belief(config.grants(), config.batch_size) == (
        LocalTraining(lr=0.1, steps=5),
        False,
    )
    guessed = RunConfig(protocol="fedavg", local_steps=5, local_lr=0.1, guess_local_steps=1)
    local, is_guess = guessed.protocol_settings().attacker_belief(guessed.grants(), 1)
    assert is_guess and local == LocalTraining(lr=0.1, steps=1)
    knowledge = build_case(guessed).server.knowledge
    assert knowledge.local_training_guessed
    assert knowledge.describe()["local_training"]["steps"] == 1
    epochs = RunConfig(protocol="fedadmm", local_steps=5, guess_local_epochs=2)
    assert epochs.protocol_settings().attacker_belief(epochs.grants(), 1)[0] == LocalTraining(
        lr=0.01, epochs=2
    )


def test_users_share_the_images_and_the_attacker_reconstructs_all_of_them() -> None:
    case = build_case(RunConfig(users=3, batch_size=2, indices=(1,)))
    assert case.client.batch.labels.shape == (6,)
    assert case.server.knowledge.batch_size == 6 and case.server.knowledge.num_users == 3


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"protocol": "fedavg", "local_batch_size": 2}, "local batch size 2 is larger than"),
        ({"local_steps": 2}, "--local-steps describes local training, which fedsgd does not"),
        ({"guess_local_lr": 0.1}, "--guess-local-lr guesses local training"),
        ({"protocol": "fedavg", "local_steps": 1, "local_epochs": 1}, "not both"),
        ({"protocol": "fedavg", "local_lr": -1.0}, "local learning rate must be positive"),
        ({"users": 0}, "--users must be at least 1"),
        ({"protocol": "fedsgd", "rounds": 2}, "use --protocol fedavg or fedadmm"),
        ({"protocol": "fedadmm", "admm_rho": 0.0}, "ADMM penalty rho must be positive"),
        ({"attacker_model_mode": "test"}, "attacker_model_mode 'test' is not one of"),
    ],
)
def test_impossible_protocol_settings_are_one_line_errors(
    overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(GradleakError, match=message):
        build_case(RunConfig(**overrides))  # type: ignore[arg-type]


def test_too_few_images_for_the_users() -> None:
    with pytest.raises(GradleakError, match="5 users × 2 samples need 10 images but"):
        build_case(RunConfig(users=5, batch_size=2))


def test_cli_fedavg_over_users_records_protocol_and_threat_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    argv = ["attack", "--attack", "ig", "--protocol", "fedavg", "--local-steps", "2"]
    argv += ["--local-lr", "0.1", "--users", "2", "--iterations", "3", "--restarts", "1"]
    argv += ["--guess-local-lr", "0.2", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["protocol"] == "fedavg" and metrics["users"] == 2
    assert metrics["protocol_settings"]["local_training"]["lr"] == 0.1
    threat = metrics["threat_model"]
    assert threat["local_training"]["lr"] == 0.2 and threat["local_training_guessed"]
    assert threat["num_users"] == 2 and len(metrics["true_labels"]) == 2


def test_cli_bad_protocol_setting_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["attack", "--protocol", "fedavg", "--local-batch-size", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "local batch size 3 is larger" in err[0]


def test_cli_refuses_a_checkpoint_of_another_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gradleak.models import build_model, save_checkpoint

    path = save_checkpoint(build_model("lenet", num_classes=10), tmp_path / "l.pt", model="lenet")
    out = tmp_path / "run"
    argv = ["attack", "--model", "resnet20", "--checkpoint", str(path), "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "saved from model 'lenet', not 'resnet20'" in err[0]


def test_hints_name_the_flag_that_fixes_it() -> None:
    with pytest.raises(GradleakError, match="use --guess-local-batch-size 2 or fewer"):
        RunConfig(protocol="fedavg", batch_size=2, guess_local_batch_size=3).validate()
    with pytest.raises(GradleakError, match="batch size must be at least 1"):
        RunConfig(protocol="fedavg", batch_size=0, local_batch_size=1).validate()
    with pytest.raises(GradleakError, match="uses only the local learning rate"):
        gradient = {"admm_reading": "gradient"}
        RunConfig(
            attack="dlg-admm", protocol="fedadmm", guess_local_steps=3, attack_options=gradient
        ).validate()


def test_sweep_protocol_entries_are_checked_with_the_base() -> None:
    from gradleak.studies.sweep.spec import parse_spec

    spec = parse_spec(
        {
            "attacks": ["ig"],
            "base": {"batch_size": 4},
            "protocols": [{"protocol": "fedavg", "local_batch_size": 2}],
        }
    )
    config = spec.run_config(spec.cells()[0], Path("x"))
    assert config.local_batch_size == 2 and config.batch_size == 4
