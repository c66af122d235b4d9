"""The attacker's replay of FedAvg local training, aggregation and FedADMM increments."""

from __future__ import annotations

import pytest
import torch

from gradleak import attacks
from gradleak.attacks.matching.objectives import get_objective
from gradleak.attacks.matching.problem import MatchingProblem, attacker_model
from gradleak.core import PrivateBatch, UpdateKind
from gradleak.core.errors import GradleakError
from gradleak.core.knowledge import Knowledge
from gradleak.fl import LocalTraining, ProtocolSettings, simulate
from gradleak.fl.replay import Replay
from gradleak.models import build_model
from gradleak.scenario import RunConfig, build_case

pytestmark = pytest.mark.usefixtures("one_thread")


def _batch(size: int, seed: int = 0) -> PrivateBatch:
    g = torch.Generator().manual_seed(seed)
    return PrivateBatch(torch.randn(size, 3, 32, 32, generator=g), (torch.arange(size) * 3) % 10)


def _problem(model, target, replay, mode="train"):  # noqa: ANN001, ANN202
    return MatchingProblem(
        attacker_model(model, mode), target, get_objective("cosine"), 0.0, replay
    )


@pytest.mark.parametrize(
    ("model_name", "settings"),
    [
        ("lenet", ProtocolSettings("fedavg", LocalTraining(lr=0.1, steps=3, batch_size=2))),
        ("resnet20", ProtocolSettings("fedavg", LocalTraining(lr=0.05, epochs=1, batch_size=1))),
        ("resnet20", ProtocolSettings("fedsgd", users=2)),
        ("lenet", ProtocolSettings("fedavg", LocalTraining(lr=0.1, steps=2), users=2)),
    ],
)
def test_replay_on_the_true_data_gives_the_shared_update(
    model_name: str, settings: ProtocolSettings
) -> None:
    model = build_model(model_name, num_classes=10, seed=4)
    batch = _batch(4)
    shared = simulate(model, batch, settings).update
    replay = Replay(settings.users, settings.local)
    problem = _problem(model, shared.tensors, replay)
    functional = problem.candidate_update(problem.params, batch.images, batch.labels)
    for name, tensor in shared.tensors.items():
        torch.testing.assert_close(functional[name], tensor, rtol=1e-4, atol=1e-6)
    # The matching loss is zero at the truth, on both the functional and autograd paths.
    assert float(problem.loss(batch.images, batch.labels)) < 1e-5
    _, value = problem.value_and_grad(batch.images, batch.labels)
    assert float(value) < 1e-5


def test_autograd_and_functional_replays_agree_on_loss_and_gradient() -> None:
    model = build_model("lenet", num_classes=10, seed=5)
    batch = _batch(2)
    local = LocalTraining(lr=0.1, steps=2, batch_size=1)
    shared = simulate(model, batch, ProtocolSettings("fedavg", local)).update
    problem = _problem(model, shared.tensors, Replay(1, local))
    candidate = _batch(2, seed=9).images
    (grad_autograd,), value = problem.value_and_grad(candidate, batch.labels)
    func_value, func_grad = torch.func.grad_and_value(problem.loss)(candidate, batch.labels)[::-1]
    torch.testing.assert_close(value, func_value.detach())
    torch.testing.assert_close(grad_autograd, func_grad, rtol=1e-4, atol=1e-7)


def test_a_wrong_guess_of_the_local_training_does_not_match_the_truth() -> None:
    model = build_model("lenet", num_classes=10, seed=6)
    batch = _batch(2)
    truth = LocalTraining(lr=0.5, steps=5)
    shared = simulate(model, batch, ProtocolSettings("fedavg", truth)).update
    right = _problem(model, shared.tensors, Replay(1, truth))
    wrong = _problem(model, shared.tensors, Replay(1, LocalTraining(lr=0.05, steps=1)))
    assert float(right.loss(batch.images, batch.labels)) < 1e-5
    assert float(wrong.loss(batch.images, batch.labels)) > 1e-3


def _knowledge(**kwargs: object) -> Knowledge:
    base = {
        "data_shape": (3, 32, 32),
        "num_classes": 10,
        "batch_size": 1,
        "mean": (0.5,) * 3,
        "std": (0.5,) * 3,
    }
    return Knowledge(**{**base, **kwargs})  # type: ignore[arg-type]


def test_attacks_refuse_updates_they_cannot_read() -> None:
    model = build_model("lenet", num_classes=10, seed=0)
    batch = _batch(1)
    local = LocalTraining(lr=0.1)
    delta = simulate(model, batch, ProtocolSettings("fedavg", local)).update
    admm = simulate(model, batch, ProtocolSettings("fedadmm", local)).update
    gradient = simulate(model, batch, ProtocolSettings("fedsgd")).update
    dlg = attacks.get("dlg").with_options({"iterations": 1})
    with pytest.raises(GradleakError, match="local_training"):
        dlg.reconstruct(delta, model, _knowledge(), progress=False)
    with pytest.raises(GradleakError, match="use dlg-admm or idlg-admm"):
        dlg.reconstruct(admm, model, _knowledge(local_training=local), progress=False)
    dlg_admm = attacks.get("dlg-admm").with_options({"iterations": 1})
    with pytest.raises(GradleakError, match="the update is a gradient"):
        dlg_admm.reconstruct(gradient, model, _knowledge(local_training=local), progress=False)


def test_admm_attack_matches_minus_increment_over_lr_as_a_gradient() -> None:
    model = build_model("lenet", num_classes=10, seed=0)
    batch = _batch(1)
    local = LocalTraining(lr=0.02)
    admm = simulate(model, batch, ProtocolSettings("fedadmm", local)).update
    gradient = simulate(model, batch, ProtocolSettings("fedsgd")).update
    attack = attacks.get("idlg-admm").with_options({"admm_reading": "gradient"})
    matched, replay = attack._matched(admm, model, _knowledge(local_training=local))
    assert matched.kind is UpdateKind.GRADIENT and replay.is_plain_gradient
    for name, g in gradient.tensors.items():  # first round, one step: −Δ/η = 2∇f
        torch.testing.assert_close(matched.tensors[name], 2 * g, rtol=1e-4, atol=1e-5)


def test_idlg_label_is_read_from_a_fedavg_weight_difference() -> None:
    config = RunConfig(
        attack="idlg", protocol="fedavg", local_steps=3, local_lr=0.1, indices=(2,), progress=False
    )
    case = build_case(config)
    update = simulate(case.server.model, case.client.batch, config.protocol_settings()).update
    attack = attacks.get("idlg").with_options({"iterations": 1})
    rec = attack.reconstruct(update, case.server.model, case.server.knowledge, progress=False)
    assert rec.label_strategy == "analytic"
    assert rec.labels.tolist() == case.client.batch.labels.tolist()


def test_a_wrong_batch_norm_mode_does_not_match_the_truth() -> None:
    model = build_model("resnet20", num_classes=10, seed=7)
    batch = _batch(2)
    shared = simulate(model, batch, ProtocolSettings("fedsgd", model_mode="train")).update
    right = _problem(model, shared.tensors, Replay(), mode="train")
    wrong = _problem(model, shared.tensors, Replay(), mode="eval")
    assert float(right.loss(batch.images, batch.labels)) < 1e-5
    assert float(wrong.loss(batch.images, batch.labels)) > 1e-3


def test_attacker_model_mode_is_a_threat_model_setting() -> None:
    config = RunConfig(model="resnet20", model_mode="train", attacker_model_mode="eval")
    knowledge = build_case(config).server.knowledge
    assert knowledge.model_mode == "eval" and knowledge.model_mode_guessed
    assert config.protocol_settings().model_mode == "train"
    shared = simulate(
        build_case(config).server.model,
        build_case(config).client.batch,
        RunConfig(model="resnet20", share_buffers=True).protocol_settings(),
    ).update
    assert "bn1.running_mean" in shared.buffers
