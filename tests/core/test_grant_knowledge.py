"""`grant_knowledge`: the one place the attacker's knowledge is built from the truth."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from gradleak.core.errors import GradleakError
from gradleak.core.knowledge import DataFacts, Grants, Knowledge, grant_knowledge
from gradleak.fl import LocalTraining, ProtocolSettings

FACTS = DataFacts((3, 8, 8), 10, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3), "toy")
LABELS = torch.tensor([3, 1, 4, 1])


def test_labels_reach_the_attacker_only_when_granted() -> None:
    hidden = grant_knowledge(FACTS, LABELS, ProtocolSettings())
    assert hidden.labels is None and not hidden.labels_known
    granted = grant_knowledge(FACTS, LABELS, ProtocolSettings(), Grants(labels_known=True))
    assert granted.labels is not None
    assert granted.labels.tolist() == [3, 1, 4, 1]
    # A copy: changing the truth afterwards changes nothing the attacker holds.
    labels = LABELS.clone()
    copied = grant_knowledge(FACTS, labels, ProtocolSettings(), Grants(labels_known=True))
    labels.fill_(0)
    assert copied.labels is not None and copied.labels.tolist() == [3, 1, 4, 1]


@pytest.mark.parametrize(("size", "users"), [(4, 1), (4, 2), (4, 4), (6, 3)])
def test_batch_size_and_users_come_from_the_truth(size: int, users: int) -> None:
    labels = torch.arange(size) % 10
    knowledge = grant_knowledge(FACTS, labels, ProtocolSettings(users=users))
    assert knowledge.batch_size == size
    assert knowledge.num_users == users


@pytest.mark.parametrize(("size", "users"), [(3, 2), (4, 3), (1, 2)])
def test_an_uneven_split_over_users_is_refused(size: int, users: int) -> None:
    with pytest.raises(GradleakError) as exc:
        grant_knowledge(FACTS, torch.zeros(size, dtype=torch.long), ProtocolSettings(users=users))
    assert str(exc.value) == f"batch_size {size} does not split evenly over {users} users"


def test_the_data_facts_are_copied_as_granted() -> None:
    knowledge = grant_knowledge(FACTS, LABELS, ProtocolSettings())
    assert knowledge.data_shape == (3, 8, 8)
    assert knowledge.num_classes == 10
    assert knowledge.mean == (0.4, 0.5, 0.6) and knowledge.std == (0.2, 0.25, 0.3)
    assert knowledge.dataset == "toy"
    assert knowledge.modality == "image"


def test_data_facts_round_trip() -> None:
    for facts in (FACTS, dataclasses.replace(FACTS, shape=(1, 28, 28), mean=(0.1,), std=(0.3,))):
        knowledge = grant_knowledge(facts, LABELS, ProtocolSettings())
        assert knowledge.data_facts() == facts
    direct = Knowledge((1, 4, 4), 3, 2, (0.5,), (0.5,), dataset="d", modality="image")
    assert direct.data_facts() == DataFacts((1, 4, 4), 3, (0.5,), (0.5,), "d", "image")


def test_model_mode_is_the_clients_unless_the_attacker_guesses() -> None:
    known = grant_knowledge(FACTS, LABELS, ProtocolSettings(model_mode="eval"))
    assert known.model_mode == "eval" and not known.model_mode_guessed
    guessed = grant_knowledge(
        FACTS, LABELS, ProtocolSettings(model_mode="eval"), Grants(model_mode="train")
    )
    assert guessed.model_mode == "train" and guessed.model_mode_guessed
    # A guess equal to the truth still counts as a guess.
    same = grant_knowledge(FACTS, LABELS, ProtocolSettings(), Grants(model_mode="train"))
    assert same.model_mode == "train" and same.model_mode_guessed


def test_local_training_is_known_or_guessed() -> None:
    local = LocalTraining(lr=0.1, steps=2, batch_size=1)
    settings = ProtocolSettings("fedavg", local, users=2)
    known = grant_knowledge(FACTS, LABELS, settings)
    assert known.local_training == local and not known.local_training_guessed
    guessed = grant_knowledge(FACTS, LABELS, settings, Grants(local_guess={"lr": 0.3}))
    assert guessed.local_training == LocalTraining(lr=0.3, steps=2, batch_size=1)
    assert guessed.local_training_guessed
    fedsgd = grant_knowledge(FACTS, LABELS, ProtocolSettings())
    assert fedsgd.local_training is None and not fedsgd.local_training_guessed


def test_a_guessed_batch_is_checked_against_one_users_samples() -> None:
    # 4 samples over 2 users: each user holds 2, so a guessed mini-batch of 3 is refused.
    settings = ProtocolSettings("fedavg", LocalTraining(lr=0.1), users=2)
    with pytest.raises(GradleakError, match="use --guess-local-batch-size 2 or fewer"):
        grant_knowledge(FACTS, LABELS, settings, Grants(local_guess={"batch_size": 3}))
    two = grant_knowledge(FACTS, LABELS, settings, Grants(local_guess={"batch_size": 2}))
    assert two.local_training is not None and two.local_training.batch_size == 2


def test_a_guess_for_fedsgd_is_refused() -> None:
    with pytest.raises(GradleakError, match="--guess-local-lr guesses local training"):
        grant_knowledge(FACTS, LABELS, ProtocolSettings(), Grants(local_guess={"lr": 0.1}))


def test_facts_that_do_not_fit_are_refused() -> None:
    bad = dataclasses.replace(FACTS, mean=(0.5,))
    with pytest.raises(GradleakError, match="1 means and 3 stds for 3 channels"):
        grant_knowledge(bad, LABELS, ProtocolSettings())
    with pytest.raises(GradleakError, match="num_classes is 1"):
        grant_knowledge(dataclasses.replace(FACTS, num_classes=1), LABELS, ProtocolSettings())


def test_describe_records_what_was_granted_and_guessed() -> None:
    settings = ProtocolSettings("fedavg", LocalTraining(lr=0.1), users=2)
    grants = Grants(labels_known=True, local_guess={"steps": 3}, model_mode="eval")
    described = grant_knowledge(FACTS, LABELS, settings, grants).describe()
    assert described["labels_known"] is True
    assert described["num_users"] == 2 and described["batch_size"] == 4
    assert described["local_training"] == {
        "lr": 0.1,
        "steps": 3,
        "epochs": None,
        "batch_size": None,
    }
    assert described["local_training_guessed"] is True
    assert described["model_mode"] == "eval" and described["model_mode_guessed"] is True


def test_rho_is_known_or_guessed_for_fedadmm_and_absent_elsewhere() -> None:
    settings = ProtocolSettings("fedadmm", LocalTraining(lr=0.1), rho=0.5, rounds=2)
    known = grant_knowledge(FACTS, LABELS, settings)
    assert known.admm is not None and (known.admm.rho, known.admm.rho_guessed) == (0.5, False)
    assert known.attacked_round == 2
    guessed = grant_knowledge(FACTS, LABELS, settings, Grants(rho_guess=3.0))
    assert guessed.admm is not None and (guessed.admm.rho, guessed.admm.rho_guessed) == (3.0, True)
    assert grant_knowledge(FACTS, LABELS, ProtocolSettings("fedavg")).admm is None
    with pytest.raises(GradleakError, match="--guess-admm-rho must be positive"):
        grant_knowledge(FACTS, LABELS, settings, Grants(rho_guess=-1.0))
