"""The threat model: what the attacker is granted, and proof it cannot reach the private batch."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
import torch

from gradleak import attacks
from gradleak.core import SharedUpdate, UpdateKind
from gradleak.core.errors import GradleakError
from gradleak.core.knowledge import AdmmKnowledge, ClientState, Knowledge, Requirement
from gradleak.fl import FedSGDClient
from gradleak.metrics import psnr
from gradleak.scenario import RunConfig, build_case

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


def _knowledge(**overrides: Any) -> Knowledge:
    values: dict[str, Any] = {
        "data_shape": (3, 32, 32),
        "num_classes": 10,
        "batch_size": 1,
        "mean": CIFAR_MEAN,
        "std": CIFAR_STD,
    }
    values.update(overrides)
    return Knowledge(**values)


# --- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"mean": (0.5, 0.5)}, "2 means and 3 stds for 3 channels"),
        ({"std": (0.2,)}, "3 means and 1 stds for 3 channels"),
        ({"std": (0.2, 0.0, 0.2)}, "std must be positive"),
        ({"std": (0.2, -0.1, 0.2)}, "std must be positive"),
        ({"num_classes": 1}, "num_classes is 1"),
        ({"batch_size": 0}, "batch_size is 0"),
        ({"model_mode": "training"}, "model_mode 'training' is not one of: train, eval"),
        ({"labels": torch.tensor([1, 2])}, r"known labels have shape \(2,\); expected \(1,\)"),
        ({"labels": torch.tensor(3)}, r"known labels have shape \(\)"),
    ],
)
def test_knowledge_validation_errors(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(GradleakError, match=message) as exc:
        _knowledge(**overrides)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("shape", [(3, 32), (3, 0, 32), ()], ids=["two-dims", "zero", "empty"])
def test_knowledge_rejects_bad_data_shape(shape: tuple[int, ...]) -> None:
    with pytest.raises(GradleakError, match="data_shape"):
        _knowledge(data_shape=shape)


def test_knowledge_copies_labels_as_long() -> None:
    labels = torch.tensor([4.0, 7.0])
    knowledge = _knowledge(batch_size=2, labels=labels)
    labels.fill_(-1)
    assert knowledge.labels is not None
    assert knowledge.labels.dtype == torch.long
    assert knowledge.labels.tolist() == [4, 7]
    assert knowledge.labels_known


def test_grants_and_describe() -> None:
    single = _knowledge()
    assert not single.labels_known
    assert single.grants(Requirement.SINGLE_SAMPLE)
    assert not single.grants(Requirement.LABELS)
    batch = _knowledge(batch_size=3, labels=torch.tensor([0, 1, 2]))
    assert batch.grants(Requirement.LABELS)
    assert not batch.grants(Requirement.SINGLE_SAMPLE)

    described = batch.describe()
    assert described["labels_known"] is True
    assert described["batch_size"] == 3
    assert described["data_shape"] == [3, 32, 32]
    # The summary says labels are known without listing them (or any tensor).
    assert "labels" not in described
    assert not any(isinstance(v, torch.Tensor) for v in described.values())


def test_admm_state_is_granted_in_round_one_and_later_only_with_the_states() -> None:
    assert not _knowledge().grants(Requirement.ADMM_STATE)  # no ADMM belief at all
    assert _knowledge(admm=AdmmKnowledge(1.0)).grants(Requirement.ADMM_STATE)
    later = _knowledge(admm=AdmmKnowledge(1.0), attacked_round=3)
    assert not later.grants(Requirement.ADMM_STATE)
    with pytest.raises(GradleakError, match="needs admm_state") as exc:
        later.require({Requirement.ADMM_STATE}, "attack 'dlg-admm'")
    assert "start of round 3 with --client-state-known" in str(exc.value)
    state = ClientState({"w": torch.ones(2)}, {"w": torch.zeros(2)})
    granted = _knowledge(admm=AdmmKnowledge(1.0, states=(state,)), attacked_round=3)
    assert granted.grants(Requirement.ADMM_STATE)


def test_admm_knowledge_and_client_states_are_checked_and_copied() -> None:
    with pytest.raises(GradleakError, match="attacked_round must be at least 1"):
        _knowledge(attacked_round=0)
    with pytest.raises(GradleakError, match="ADMM penalty rho must be positive"):
        AdmmKnowledge(0.0)
    primal = {"w": torch.ones(2)}
    state = ClientState(primal, {"w": torch.zeros(2)})
    primal["w"].fill_(5.0)  # the client moves on; what was granted does not
    assert state.primal["w"].tolist() == [1.0, 1.0]


# --- require() --------------------------------------------------------------------------------


def test_require_labels_without_labels_is_refused() -> None:
    with pytest.raises(GradleakError, match="labels") as exc:
        _knowledge().require({Requirement.LABELS}, "label strategy 'known'")
    message = str(exc.value)
    assert "label strategy 'known'" in message
    assert "--labels-known" in message


def test_require_single_sample_with_batch_two_is_refused() -> None:
    with pytest.raises(GradleakError, match="single_sample") as exc:
        _knowledge(batch_size=2).require({Requirement.SINGLE_SAMPLE}, "label strategy 'analytic'")
    assert "--batch-size 1" in str(exc.value)


def test_require_passes_when_granted() -> None:
    knowledge = _knowledge(labels=torch.tensor([3]))
    knowledge.require({Requirement.LABELS, Requirement.SINGLE_SAMPLE}, "anything")
    knowledge.require(frozenset(), "anything")


def _lenet_case(**config: Any) -> tuple[Any, SharedUpdate]:
    case = build_case(RunConfig(progress=False, **config))
    return case, FedSGDClient(case.server.model).compute_update(case.client.batch)


@pytest.mark.usefixtures("one_thread")
def test_attack_with_known_labels_refused_when_labels_not_granted() -> None:
    case, update = _lenet_case()
    attack = attacks.get("dlg").with_options({"label_strategy": "known", "iterations": 1})
    with pytest.raises(GradleakError, match="needs labels"):
        attack.reconstruct(update, case.server.model, case.server.knowledge, progress=False)


@pytest.mark.usefixtures("one_thread")
def test_analytic_labels_refused_for_batch_of_two() -> None:
    case, update = _lenet_case(batch_size=2)
    attack = attacks.get("idlg").with_options({"iterations": 1})
    with pytest.raises(GradleakError, match="needs single_sample"):
        attack.reconstruct(update, case.server.model, case.server.knowledge, progress=False)


@pytest.mark.usefixtures("one_thread")
def test_attack_refuses_an_update_of_another_kind() -> None:
    case, update = _lenet_case()
    delta = SharedUpdate(update.tensors, UpdateKind.WEIGHT_DELTA, update.metadata)
    with pytest.raises(GradleakError, match="weight_delta"):
        attacks.get("dlg").reconstruct(
            delta, case.server.model, case.server.knowledge, progress=False
        )


@pytest.mark.usefixtures("one_thread")
def test_attack_validates_the_update_against_the_model() -> None:
    case, update = _lenet_case()
    tensors = dict(update.tensors)
    tensors["classifier.bias"] = torch.full_like(tensors["classifier.bias"], math.nan)
    with pytest.raises(GradleakError, match="NaN or Inf"):
        attacks.get("dlg").reconstruct(
            SharedUpdate(tensors), case.server.model, case.server.knowledge, progress=False
        )


# --- the attacker's view ----------------------------------------------------------------------


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("labels_known", [False, True])
def test_knowledge_holds_labels_only_when_granted(labels_known: bool) -> None:
    case = build_case(RunConfig(batch_size=2, labels_known=labels_known, progress=False))
    if not labels_known:
        assert case.server.knowledge.labels is None
        assert not case.server.knowledge.labels_known
        return
    assert case.server.knowledge.labels is not None
    assert torch.equal(case.server.knowledge.labels, case.client.batch.labels)
    # A copy: the knowledge does not alias the client's label tensor.
    assert case.server.knowledge.labels.data_ptr() != case.client.batch.labels.data_ptr()


def _attacker_tensors(
    update: SharedUpdate, model: torch.nn.Module, knowledge: Knowledge
) -> dict[str, torch.Tensor]:
    found = {f"update:{n}": t for n, t in update.tensors.items()}
    found.update({f"model:{n}": t for n, t in model.state_dict().items()})
    for field in dataclasses.fields(knowledge):
        value = getattr(knowledge, field.name)
        if isinstance(value, torch.Tensor):
            found[f"knowledge:{field.name}"] = value
    return found


def _assert_no_private_images(found: dict[str, torch.Tensor], images: torch.Tensor) -> None:
    storage = images.untyped_storage().data_ptr()
    flat = images.detach().flatten()
    for where, tensor in found.items():
        assert tensor.untyped_storage().data_ptr() != storage, f"{where} aliases the batch"
        if tensor.numel() == flat.numel():
            assert not torch.allclose(tensor.detach().flatten().float(), flat), where
        if tensor.numel() >= flat.numel() and tensor.is_floating_point():
            # Not even a copy of the first image's pixels hides inside a larger tensor.
            values = tensor.detach().flatten()
            assert not torch.isin(flat[:64], values).all(), where


def test_leak_check_detects_copies_and_aliases() -> None:
    images = torch.randn(1, 3, 32, 32)
    for leaked in (images, images.clone(), torch.cat([torch.zeros(5), images.flatten()])):
        with pytest.raises(AssertionError):
            _assert_no_private_images({"leak": leaked}, images)
    _assert_no_private_images({"other": torch.randn(1, 3, 32, 32)}, images)


@pytest.mark.usefixtures("one_thread")
def test_attack_cannot_reach_the_private_batch() -> None:
    """The key threat-model test: the private batch is destroyed before the attack runs.

    If the attack read the images or labels from anywhere but the shared update, the server's
    model and the granted knowledge, it would see NaN and -1 and could not reconstruct.
    """
    case = build_case(RunConfig(attack="idlg", indices=(0,), progress=False))
    attack = attacks.get("idlg").with_options({"iterations": 60})
    update = FedSGDClient(case.server.model).compute_update(case.client.batch)
    truth = case.client.batch.images.clone()
    true_labels = case.client.batch.labels.clone()
    model_state = {n: t.clone() for n, t in case.server.model.state_dict().items()}

    assert case.server.knowledge.labels is None
    _assert_no_private_images(
        _attacker_tensors(update, case.server.model, case.server.knowledge), truth
    )

    # Destroy the private batch in place before the attack sees anything.
    case.client.batch.images.fill_(math.nan)
    case.client.batch.labels.fill_(-1)

    rec = attack.reconstruct(
        update, case.server.model, case.server.knowledge, seed=0, progress=False
    )

    assert torch.isnan(case.client.batch.images).all()  # the attack did not restore it either
    assert torch.isfinite(rec.images).all()
    score = psnr(case.server.decode(rec.images), case.server.decode(truth))
    assert float(score.mean()) >= 30.0
    assert rec.labels is not None
    assert rec.labels.tolist() == true_labels.tolist()
    # The attack did not change the server's model either.
    for name, value in case.server.model.state_dict().items():
        assert torch.equal(value, model_state[name]), name


@pytest.mark.usefixtures("one_thread")
def test_known_labels_come_from_the_knowledge_not_the_batch() -> None:
    case = build_case(RunConfig(batch_size=2, labels_known=True, progress=False))
    update = FedSGDClient(case.server.model).compute_update(case.client.batch)
    true_labels = case.client.batch.labels.clone()
    case.client.batch.images.fill_(math.nan)
    case.client.batch.labels.fill_(-1)

    attack = attacks.get("ig").with_options(
        {"iterations": 3, "restarts": 1, "label_strategy": "known"}
    )
    rec = attack.reconstruct(update, case.server.model, case.server.knowledge, progress=False)

    assert rec.label_strategy == "known"
    assert rec.labels is not None
    assert rec.labels.tolist() == true_labels.tolist()
    assert torch.isfinite(rec.images).all()
