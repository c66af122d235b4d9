"""The analytic Linear-layer attack against inputs known from the client's side."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from gradleak.attacks.closed_form.analytic import (
    AnalyticAttack,
    analytic_layer_input,
    find_first_linear,
)
from gradleak.core.batch import PrivateBatch
from gradleak.core.errors import GradleakError
from gradleak.core.knowledge import Knowledge
from gradleak.core.update import SharedUpdate, UpdateKind
from gradleak.fl import FedSGDClient
from gradleak.scenario import RunConfig, build_case

pytestmark = pytest.mark.usefixtures("one_thread")


def _relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).norm() / want.norm())


def _knowledge(batch: PrivateBatch) -> Knowledge:
    channels = batch.images.shape[1]
    return Knowledge(
        data_shape=tuple(batch.images.shape[1:]),
        num_classes=10,
        batch_size=len(batch),
        mean=(0.0,) * channels,
        std=(1.0,) * channels,
    )


@pytest.fixture(scope="module")
def mlp_case():
    return build_case(RunConfig(model="mlp", indices=(0,), progress=False))


def test_the_mlp_model_starts_with_a_biased_linear_on_the_flat_image(mlp_case) -> None:
    name, layer = find_first_linear(mlp_case.server.model)
    assert layer.bias is not None
    assert layer.in_features == 3 * 32 * 32
    assert name == "features.1"


def test_mlp_recovers_the_bundled_cifar10_image_and_its_label(mlp_case) -> None:
    update = FedSGDClient(mlp_case.server.model).compute_update(mlp_case.client.batch)
    rec = AnalyticAttack().reconstruct(update, mlp_case.server.model, mlp_case.server.knowledge)
    assert rec.images.shape == mlp_case.client.batch.images.shape
    assert _relative_error(rec.images, mlp_case.client.batch.images) < 1e-5
    assert rec.labels is not None and rec.labels.tolist() == mlp_case.client.batch.labels.tolist()
    assert rec.iterations == 0 and rec.loss < 1e-5
    assert 0 < rec.details["usable_rows"] <= 1024


def test_mlp_recovers_a_random_image() -> None:
    torch.manual_seed(3)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 20), nn.ReLU(), nn.Linear(20, 10))
    batch = PrivateBatch(torch.randn(1, 3, 4, 4), torch.tensor([7]))
    update = FedSGDClient(model).compute_update(batch)
    rec = AnalyticAttack().reconstruct(update, model, _knowledge(batch))
    assert _relative_error(rec.images, batch.images) < 1e-5
    assert rec.labels.tolist() == [7]
    # Dead ReLU units give exactly zero bias gradients and are left out.
    result = analytic_layer_input(update, "1")
    hidden = model[1](batch.images.flatten(1))[0]
    assert set(result.usable_rows) <= set((hidden > 0).nonzero().flatten().tolist())


def test_lenet_first_linear_gives_its_input_features_but_no_image() -> None:
    case = build_case(RunConfig(model="lenet", indices=(0,), progress=False))
    name, layer = find_first_linear(case.server.model)
    seen: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, inputs, _o: seen.append(inputs[0].detach()))
    try:
        update = FedSGDClient(case.server.model).compute_update(case.client.batch)
        case.server.model(case.client.batch.images)
    finally:
        handle.remove()
    truth = seen[-1]
    result = analytic_layer_input(update, name)
    assert result.features.shape == truth.shape == (1, 768)
    assert _relative_error(result.features, truth) < 1e-5
    with pytest.raises(GradleakError, match="input features of layer 'classifier', not the image"):
        AnalyticAttack().reconstruct(update, case.server.model, case.server.knowledge)


def test_batch_of_two_gives_each_rows_weighted_mix_of_the_samples() -> None:
    torch.manual_seed(5)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 4))
    batch = PrivateBatch(torch.randn(2, 3, 2, 2), torch.tensor([1, 3]))
    update = FedSGDClient(model).compute_update(batch)
    result = analytic_layer_input(update, "1", count=2)
    assert len(result.rows) == 2
    bias_grads = []  # per-sample ∂L_n/∂b of the first layer, one backward pass each
    for n in range(2):
        loss = F.cross_entropy(model(batch.images[n : n + 1]), batch.labels[n : n + 1])
        bias_grads.append(torch.autograd.grad(loss, model[1].bias)[0])
    flat = batch.images.flatten(1)
    for k, row in enumerate(result.rows):
        weights = torch.stack([g[row] for g in bias_grads])
        mix = (weights[:, None] * flat).sum(0) / weights.sum()
        assert _relative_error(result.features[k], mix) < 1e-5
    # Rows are ordered by |bias gradient| and the mix is not a rank-one gradient.
    gb = update.tensors["1.bias"].abs()
    assert gb[result.rows[0]] == gb.max()
    assert result.spread > 1e-3
    rec = AnalyticAttack().reconstruct(update, model, _knowledge(batch))
    assert rec.images.shape == (2, 3, 2, 2) and rec.labels is None


def test_a_model_without_linear_layer_is_refused() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten())
    with pytest.raises(GradleakError, match="has no nn.Linear layer"):
        find_first_linear(model)


def test_a_linear_without_bias_is_refused() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3, bias=False))
    with pytest.raises(GradleakError, match="first Linear layer '1' .* has no bias"):
        find_first_linear(model)
    update = SharedUpdate({"1.weight": torch.ones(3, 4)})
    with pytest.raises(GradleakError, match="no bias gradient for Linear layer '1'"):
        analytic_layer_input(update, "1")


def test_a_weight_delta_update_is_refused() -> None:
    update = SharedUpdate(
        {"w.weight": torch.ones(3, 4), "w.bias": torch.ones(3)}, kind="weight_delta"
    )
    assert update.kind is UpdateKind.WEIGHT_DELTA
    with pytest.raises(GradleakError, match="reads a gradient but the update is a weight_delta"):
        analytic_layer_input(update, "w")


def test_all_zero_bias_gradients_are_refused() -> None:
    update = SharedUpdate({"w.weight": torch.zeros(3, 4), "w.bias": torch.zeros(3)})
    with pytest.raises(GradleakError, match="every bias gradient of layer 'w' is zero"):
        analytic_layer_input(update, "w")


def test_options_accept_nothing_new_and_refuse_unknown_keys() -> None:
    attack = AnalyticAttack().with_options({})
    assert attack.config.iterations == 0 and attack.config.restarts == 1
    with pytest.raises(GradleakError, match="unknown key 'lr'"):
        attack.with_options({"lr": 0.1})
    assert attack.with_options({"threshold": 0.01}).config.threshold == 0.01
    with pytest.raises(GradleakError, match="does not iterate"):
        attack.with_options({"iterations": 5})


def test_a_layer_outside_the_model_is_named_not_a_stop_iteration() -> None:
    from gradleak.attacks.closed_form.analytic import takes_flat_image

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    stranger = torch.nn.Linear(12, 3)
    with pytest.raises(GradleakError, match="not a module of the model"):
        takes_flat_image(model, stranger, (3, 2, 2))


def test_a_model_that_cannot_run_an_image_is_one_line() -> None:
    from gradleak.attacks.closed_form.analytic import takes_flat_image

    bare = torch.nn.Linear(12, 3)  # reads the last dimension only, not a (3, 2, 2) image
    with pytest.raises(GradleakError, match=r"cannot run one input of shape \(3, 2, 2\)"):
        takes_flat_image(bare, bare, (3, 2, 2))
