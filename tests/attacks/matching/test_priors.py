"""Image priors: their specs, the batch-norm statistics prior and its targets."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from gradleak import attacks
from gradleak.attacks.matching.priors import (
    BatchNormPrior,
    PriorSpec,
    batch_norm_layers,
    client_statistics,
    parse_prior,
    parse_priors,
    server_statistics,
)
from gradleak.attacks.matching.problem import attacker_model
from gradleak.core.errors import GradleakError
from gradleak.fl import FedSGDClient
from gradleak.scenario import RunConfig, build_case

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("tv", PriorSpec("tv")),
        ("tv:0.5", PriorSpec("tv", 0.5)),
        ("bn:1e-3", PriorSpec("bn", 1e-3)),
        ("bn-client", PriorSpec("bn-client")),
        ("gan:priors/vae.pt", PriorSpec("gan", path="priors/vae.pt")),
        ("gias:C:/x.pt", PriorSpec("gias", path="C:/x.pt")),
    ],
)
def test_prior_specs_parse(text: str, spec: PriorSpec) -> None:
    assert parse_prior(text) == spec
    assert parse_prior(str(spec)) == spec  # a spec prints as it parses


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        (["deep"], "unknown prior 'deep'; choose one of: tv[:W], bn[:W]"),
        (["tv:-1"], "the weight after ':' must be a number >= 0"),
        (["bn:nan"], "the weight after ':' must be a number >= 0"),
        (["gan"], "prior 'gan' needs its file"),
        (["bn", "bn-server"], "one batch-norm prior at a time"),
        (["gan:a.pt", "gias:a.pt"], "one generative prior at a time"),
    ],
)
def test_bad_prior_specs_are_refused(texts: list[str], message: str) -> None:
    with pytest.raises(GradleakError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_priors(texts)


@pytest.fixture(scope="module")
def resnet_batch():
    case = build_case(RunConfig(model="resnet20", indices=(0, 1, 2), batch_size=3, progress=False))
    update = FedSGDClient(case.server.model, share_buffers=True).compute_update(case.client.batch)
    return case, update


def _prior(case, targets, weight: float = 1.0) -> BatchNormPrior:
    replica = attacker_model(case.server.model, "train")
    params = {n: p.detach() for n, p in replica.named_parameters()}
    buffers = {n: b.detach() for n, b in replica.named_buffers()}
    return BatchNormPrior(replica, params, buffers, targets, weight)


def test_client_statistics_read_back_from_shared_buffers_make_the_prior_zero_at_the_truth(
    resnet_batch,
) -> None:
    case, update = resnet_batch
    targets = client_statistics(
        case.server.model, update, users=1, one_forward=True, model_mode="train"
    )
    prior = _prior(case, targets)
    truth = case.client.batch.images
    at_truth = float(prior(truth))
    assert at_truth < 1e-3
    noise = torch.randn(truth.shape, generator=torch.Generator().manual_seed(0))
    assert float(prior(noise)) > 100 * max(at_truth, 1e-5)
    # The read-back mean is the truth's batch mean at the first batch-norm layer's input.
    name = next(iter(targets.means))
    stats = prior.statistics(truth)[name]
    torch.testing.assert_close(targets.means[name], stats[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(targets.variances[name], stats[1], atol=1e-4, rtol=1e-4)


def test_the_prior_is_positive_when_statistics_differ_and_scales_with_its_weight(
    resnet_batch,
) -> None:
    case, update = resnet_batch
    targets = client_statistics(
        case.server.model, update, users=1, one_forward=True, model_mode="train"
    )
    other = case.client.batch.images.flip(-1) * 0.5
    one = float(_prior(case, targets, 1.0)(other))
    assert one > 0
    assert float(_prior(case, targets, 0.25)(other)) == pytest.approx(0.25 * one, rel=1e-5)


def test_server_statistics_are_the_running_statistics(resnet_batch) -> None:
    case, _ = resnet_batch
    targets = server_statistics(case.server.model)
    layer = dict(case.server.model.named_modules())[next(iter(targets.means))]
    assert torch.equal(targets.means[next(iter(targets.means))], layer.running_mean)
    assert targets.source == "server running statistics"


def test_batch_norm_priors_refuse_what_the_threat_model_does_not_grant(resnet_batch) -> None:
    case, update = resnet_batch
    bare = FedSGDClient(case.server.model).compute_update(case.client.batch)
    with pytest.raises(GradleakError, match="carries no batch-norm buffers; add --share-buffers"):
        client_statistics(case.server.model, bare, users=1, one_forward=True, model_mode="train")
    with pytest.raises(GradleakError, match="several forward passes"):
        client_statistics(case.server.model, update, users=1, one_forward=False, model_mode="train")
    with pytest.raises(GradleakError, match="averages 2 users' buffers"):
        client_statistics(case.server.model, update, users=2, one_forward=True, model_mode="train")
    with pytest.raises(GradleakError, match="a client in eval mode leaves its running statistics"):
        client_statistics(case.server.model, update, users=1, one_forward=True, model_mode="eval")
    lenet = build_case(RunConfig(model="lenet", indices=(0,), progress=False)).server.model
    with pytest.raises(GradleakError, match="needs a model with batch norm, and this one has none"):
        server_statistics(lenet)


def test_ig_with_a_bn_prior_runs_and_says_so(resnet_batch) -> None:
    case, update = resnet_batch
    attack = attacks.get("ig").with_options(
        {"iterations": 3, "restarts": 2, "priors": ["tv:1e-4", "bn-client:0.01"]}
    )
    rec = attack.reconstruct(update, case.server.model, case.server.knowledge, progress=False)
    assert rec.images.shape == case.client.batch.images.shape
    assert rec.details["priors"] == ["tv:0.0001", "bn-client:0.01"]
    assert rec.details["bn_statistics"] == "client batch statistics"
    assert torch.isfinite(rec.images).all()


def test_ig_refuses_a_bn_prior_on_a_model_without_batch_norm() -> None:
    case = build_case(RunConfig(model="lenet", indices=(0,), progress=False))
    update = FedSGDClient(case.server.model).compute_update(case.client.batch)
    attack = attacks.get("ig").with_options({"iterations": 2, "priors": ["bn"]})
    with pytest.raises(GradleakError, match="has none"):
        attack.reconstruct(update, case.server.model, case.server.knowledge, progress=False)


def test_cumulative_batch_norm_statistics_are_read_back_too() -> None:
    case = build_case(RunConfig(model="resnet20", indices=(0, 1), batch_size=2, progress=False))
    model = case.server.model
    for layer in batch_norm_layers(model).values():
        layer.momentum = None  # a cumulative average over num_batches_tracked batches
        layer.num_batches_tracked.fill_(3)
    update = FedSGDClient(model, share_buffers=True).compute_update(case.client.batch)
    targets = client_statistics(model, update, users=1, one_forward=True, model_mode="train")
    prior = _prior(case, targets)
    assert float(prior(case.client.batch.images)) < 1e-3


def test_bn_takes_the_servers_statistics_where_the_clients_cannot_be_read(resnet_batch) -> None:
    case, update = resnet_batch
    knowledge = dataclasses.replace(case.server.knowledge, model_mode="eval")
    attack = attacks.get("ig").with_options({"iterations": 1, "restarts": 1, "priors": ["bn"]})
    rec = attack.reconstruct(update, case.server.model, knowledge, progress=False)
    assert rec.details["bn_statistics"] == "server running statistics"
    client = attacks.get("ig").with_options({"iterations": 1, "priors": ["bn-client"]})
    with pytest.raises(GradleakError, match="eval mode"):
        client.reconstruct(update, case.server.model, knowledge, progress=False)
