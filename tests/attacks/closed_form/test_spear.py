"""SPEAR against batches known from the client's side: exact recovery, certificates, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from gradleak.attacks import registry
from gradleak.attacks.closed_form.spear import (
    SpearAttack,
    SpearConfig,
    certify,
    check_relu_follows,
    pattern_is_realizable,
    spear_layer_input,
)
from gradleak.core.batch import PrivateBatch
from gradleak.core.errors import GradleakError
from gradleak.core.knowledge import Knowledge
from gradleak.core.update import SharedUpdate, UpdateKind
from gradleak.fl import FedSGDClient
from gradleak.scenario import RunConfig, build_case
from tests.cli.running import cli_exit, one_line_error

pytestmark = pytest.mark.usefixtures("one_thread")


def _knowledge(batch: PrivateBatch) -> Knowledge:
    channels = batch.images.shape[1]
    return Knowledge(
        data_shape=tuple(batch.images.shape[1:]),
        num_classes=10,
        batch_size=len(batch),
        mean=(0.0,) * channels,
        std=(1.0,) * channels,
    )


def _errors_per_recovery(recovered: torch.Tensor, truth: torch.Tensor) -> list[float]:
    """Per recovered input, its relative error to the nearest true input."""
    flat_r, flat_t = recovered.flatten(1).double(), truth.flatten(1).double()
    relative = torch.cdist(flat_r, flat_t) / flat_t.norm(dim=1)
    return relative.min(dim=1).values.tolist()


def _mlp(inputs: int, width: int, seed: int, activation: nn.Module | None = None) -> nn.Module:
    torch.manual_seed(seed)
    act = nn.ReLU() if activation is None else activation
    return nn.Sequential(nn.Flatten(), nn.Linear(inputs, width), act, nn.Linear(width, 10))


def _synthetic(batch_size: int, seed: int = 1) -> tuple[nn.Module, PrivateBatch, SharedUpdate]:
    model = _mlp(48, 64, seed)
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(batch_size, 3, 4, 4, generator=generator)
    labels = torch.randint(0, 10, (batch_size,), generator=generator)
    batch = PrivateBatch(images, labels)
    return model, batch, FedSGDClient(model).compute_update(batch)


@pytest.fixture(scope="module")
def cifar_case():
    return build_case(
        RunConfig(model="mlp1-256", indices=(0, 1, 2, 3), batch_size=4, progress=False)
    )


def test_a_batch_of_four_bundled_cifar10_images_is_recovered_exactly(cifar_case) -> None:
    model, batch = cifar_case.server.model, cifar_case.client.batch
    update = FedSGDClient(model).compute_update(batch)
    rec = SpearAttack().reconstruct(update, model, cifar_case.server.knowledge, seed=0)
    assert rec.images.shape == batch.images.shape
    assert max(_errors_per_recovery(rec.images, batch.images)) < 1e-4
    assert rec.details["certified"] == [True] * 4 and rec.details["num_certified"] == 4
    assert rec.details["rank"] == 4 and rec.details["budget_exhausted"] is False
    assert rec.iterations == 0 and rec.loss < 1e-5 and rec.labels is None


def test_a_batch_of_eight_random_inputs_is_recovered_exactly() -> None:
    model, batch, update = _synthetic(8)
    rec = SpearAttack().reconstruct(update, model, _knowledge(batch))
    assert max(_errors_per_recovery(rec.images, batch.images)) < 1e-4
    assert rec.details["num_certified"] == 8
    # Each recovered ∂L/∂Z column is one sample's: zero exactly where its unit is inactive.
    result = spear_layer_input(update, "1", model[1], 8)
    pre = model[1](batch.images.flatten(1)).detach().double()
    for k, x in enumerate(result.features):
        n = int(torch.cdist(x[None].double(), batch.images.flatten(1).double()).argmin())
        live = result.columns.abs().sum(dim=1) > 0
        column = result.columns[live, k].abs()
        assert torch.equal(column <= 1e-5 * column.max(), pre[n, live] <= 0)


def test_a_batch_of_24_through_a_wide_layer_is_recovered_exactly() -> None:
    torch.manual_seed(1)
    model = _mlp(48, 256, 1)
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(24, 3, 4, 4, generator=generator)
    batch = PrivateBatch(images, torch.randint(0, 10, (24,), generator=generator))
    update = FedSGDClient(model).compute_update(batch)
    result = spear_layer_input(update, "1", model[1], 24)
    errors = _errors_per_recovery(result.features, images)
    assert max(errors) < 1e-4 and result.num_certified == 24
    owners = torch.cdist(result.features.double(), images.flatten(1).double()).argmin(dim=1)
    assert sorted(owners.tolist()) == list(range(24))
    assert not result.budget_exhausted and result.directions == 24


def test_only_a_single_inputs_inactive_set_is_a_realizable_pattern() -> None:
    """In the frame where Q is the identity, A holds the batch's pre-activations and the
    inputs are the rows r with Σ r = 1: each sample's own inactive set is realised, the
    rows inactive for two samples at once (a mixture's zeros) are not."""
    model, batch, _ = _synthetic(6, seed=10)
    pre = model[1](batch.images.flatten(1)).detach().double()  # B × rows
    unit = pre / pre.norm(dim=0)
    total = torch.ones(6, dtype=torch.float64)
    inactive = pre <= 0
    for n in range(6):
        assert pattern_is_realizable(unit, total, inactive[n])
    for n in range(5):
        assert not pattern_is_realizable(unit, total, inactive[n] & inactive[n + 1])


def test_one_sample_is_recovered_exactly_with_its_label() -> None:
    model, batch, update = _synthetic(1, seed=4)
    rec = SpearAttack().reconstruct(update, model, _knowledge(batch))
    assert max(_errors_per_recovery(rec.images, batch.images)) < 1e-5
    assert rec.details["certified"] == [True] and rec.details["samples"] == 1
    assert rec.labels is not None and rec.labels.tolist() == batch.labels.tolist()


def test_an_input_whose_column_does_not_match_its_relu_pattern_is_not_certified() -> None:
    """A gradient in which sample 0's ∂L/∂Z column carries the ReLU pattern of an input
    outside the batch: still rank B and sparse, so SPEAR separates it, but W x_0 + b
    disagrees with those zeros."""
    model, batch, _ = _synthetic(4, seed=2)
    flat = batch.images.flatten(1)
    pre = model[1](flat)
    hidden = F.relu(pre)
    loss = F.cross_entropy(model[3](hidden), batch.labels)
    upstream = torch.autograd.grad(loss, hidden)[0].detach()  # ∂L/∂h per sample
    columns = upstream * (pre.detach() > 0)
    stranger = torch.randn(1, flat.shape[1], generator=torch.Generator().manual_seed(9))
    columns[0] = upstream[0] * (model[1](stranger).detach()[0] > 0)  # another input's pattern
    tensors = {name: torch.zeros_like(p) for name, p in model.named_parameters()}
    tensors["1.weight"], tensors["1.bias"] = columns.T @ flat, columns.sum(dim=0)
    result = spear_layer_input(SharedUpdate(tensors), "1", model[1], 4)
    errors = _errors_per_recovery(result.features, batch.images)
    assert max(errors) < 1e-4  # every input is separated, the inconsistent one included
    owner = [int(torch.cdist(x[None], flat).argmin()) for x in result.features]
    assert list(result.certified) == [n != 0 for n in owner]
    assert result.mismatches[owner.index(0)] > 0
    assert result.budget_exhausted  # the search kept looking for a consistent set


def test_the_certificate_refuses_a_plausible_but_wrong_input() -> None:
    model, batch, update = _synthetic(2, seed=3)
    result = spear_layer_input(update, "1", model[1], 2)
    weight, bias = model[1].weight.double(), model[1].bias.double()
    features = result.features.double()
    ok, _ = certify(features, result.columns, weight, bias, zero_tol=1e-5, margin=1e-4)
    assert ok == [True, True]
    # Each input against the other's column, and a slightly moved input: both refused.
    swapped, _ = certify(features, result.columns.flip(1), weight, bias, zero_tol=1e-5, margin=1e-4)
    assert swapped == [False, False]
    moved = (
        features
        + 0.3
        * features.norm(dim=1, keepdim=True)
        * torch.randn(
            features.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64
        )
        / features.shape[1] ** 0.5
    )
    wrong, mismatches = certify(moved, result.columns, weight, bias, zero_tol=1e-5, margin=1e-4)
    assert wrong == [False, False] and min(mismatches) > 0


def test_the_same_seed_gives_the_same_result() -> None:
    model, batch, update = _synthetic(6, seed=5)
    attack = SpearAttack()
    first = attack.reconstruct(update, model, _knowledge(batch), seed=7)
    second = attack.reconstruct(update, model, _knowledge(batch), seed=7)
    assert torch.equal(first.images, second.images)
    assert first.details["samples"] == second.details["samples"]
    assert first.details["certified"] == second.details["certified"]


def test_a_tiny_budget_says_so_and_certifies_only_exact_inputs() -> None:
    model, batch, update = _synthetic(8, seed=6)
    config = SpearConfig(max_samples=3, chunk=1, refine_steps=0)
    rec = SpearAttack(config=config).reconstruct(update, model, _knowledge(batch), seed=1)
    assert rec.details["budget_exhausted"] is True and rec.details["samples"] == 3
    exact = [e < 1e-4 for e in _errors_per_recovery(rec.images, batch.images)]
    assert rec.details["certified"] == exact
    assert rec.details["num_certified"] < 8


def test_a_budget_that_ends_halfway_certifies_some_inputs_and_only_exact_ones() -> None:
    case = build_case(RunConfig(model="mlp1-256", indices=tuple(range(8)), batch_size=8))
    model, batch = case.server.model, case.client.batch
    update = FedSGDClient(model).compute_update(batch)
    rec = (
        SpearAttack()
        .with_options({"max_samples": 10})
        .reconstruct(update, model, case.server.knowledge)
    )
    assert rec.details["budget_exhausted"] is True
    exact = [e < 1e-4 for e in _errors_per_recovery(rec.images, batch.images)]
    certified = rec.details["certified"]
    # Some inputs are certified before the budget ends, not all; each certified one is exact.
    assert 0 < rec.details["num_certified"] == sum(certified) < 8
    assert all(e for c, e in zip(certified, exact, strict=True) if c)


def test_plain_sampling_without_refinement_also_recovers_the_batch() -> None:
    model, batch, update = _synthetic(4, seed=8)
    attack = SpearAttack().with_options({"refine_steps": 0})
    rec = attack.reconstruct(update, model, _knowledge(batch))
    assert max(_errors_per_recovery(rec.images, batch.images)) < 1e-4
    assert rec.details["num_certified"] == 4 and rec.details["refine_steps"] == 0


def test_a_cnn_is_refused(cifar_case) -> None:
    lenet = build_case(RunConfig(model="lenet", indices=(0,), progress=False)).server.model
    with pytest.raises(GradleakError, match="does not; use an mlp model"):
        SpearAttack().check_model(lenet, (3, 32, 32), 1)


def test_a_first_linear_without_relu_after_it_is_refused() -> None:
    model = _mlp(48, 16, 0, activation=nn.Tanh())
    assert not check_relu_follows(model, "1", (3, 4, 4))
    assert check_relu_follows(_mlp(48, 16, 0), "1", (3, 4, 4))
    with pytest.raises(GradleakError, match="needs an nn.ReLU right after the first Linear"):
        SpearAttack().check_model(model, (3, 4, 4), 2)


def test_a_batch_wider_than_the_layer_is_refused() -> None:
    model = _mlp(48, 6, 0)
    with pytest.raises(GradleakError, match="--batch-size ≤ 6"):
        SpearAttack().check_model(model, (3, 4, 4), 8)
    SpearAttack().check_model(model, (3, 4, 4), 6)


def test_a_weight_delta_is_refused_and_options_are_checked() -> None:
    model, batch, update = _synthetic(2)
    delta = SharedUpdate(update.tensors, kind="weight_delta")
    with pytest.raises(GradleakError, match="reads a gradient but the update is a weight_delta"):
        spear_layer_input(delta, "1", model[1], 2)
    attack = registry.get("spear")
    assert isinstance(attack, SpearAttack) and attack.reads == {UpdateKind.GRADIENT}
    with pytest.raises(GradleakError, match="does not iterate"):
        attack.with_options({"iterations": 5})
    with pytest.raises(GradleakError, match="max_samples must be a positive integer"):
        attack.with_options({"max_samples": 0})


def test_the_command_refuses_lenet_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["attack", "--attack", "spear", "--model", "lenet", "--no-progress"]
    assert cli_exit([*argv, "--out", str(tmp_path / "run")]) == 2
    assert "use an mlp model" in one_line_error(capsys)


def test_the_command_refuses_a_batch_wider_than_the_layer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["attack", "--attack", "spear", "--model", "mlp1-4", "--batch-size", "8"]
    assert cli_exit([*argv, "--no-progress", "--out", str(tmp_path / "run")]) == 2
    assert "use --batch-size ≤ 4" in one_line_error(capsys)
    assert not (tmp_path / "run").exists()


def test_the_command_refuses_a_first_linear_without_relu(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    factory = tmp_path / "tanh_mlp.py"
    factory.write_text(
        "from torch import nn\n\n\n"
        "def make(num_classes=10):\n"
        "    return nn.Sequential(\n"
        "        nn.Flatten(), nn.Linear(3 * 32 * 32, 64), nn.Tanh(), nn.Linear(64, num_classes)\n"
        "    )\n"
    )
    argv = ["attack", "--attack", "spear", "--model", f"{factory}:make", "--batch-size", "2"]
    assert cli_exit([*argv, "--no-progress", "--out", str(tmp_path / "run")]) == 2
    assert "needs an nn.ReLU right after the first Linear" in one_line_error(capsys)


def test_the_command_recovers_a_batch_of_four(tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = ["attack", "--attack", "spear", "--model", "mlp1-256", "--batch-size", "4"]
    assert cli_exit([*argv, "--no-progress", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["batch_size"] == 4 and metrics["psnr"] >= 60


def test_an_interrupt_keeps_what_was_found(monkeypatch: pytest.MonkeyPatch) -> None:
    from gradleak.attacks.closed_form.spear import search

    model, batch, update = _synthetic(8, seed=6)
    draw = search.ColumnSearch._directions
    calls = []

    def interrupted_later(self, count, generator):  # the second chunk meets Ctrl-C
        calls.append(count)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return draw(self, count, generator)

    monkeypatch.setattr(search.ColumnSearch, "_directions", interrupted_later)
    config = SpearConfig(chunk=4, refine_steps=0)
    rec = SpearAttack(config=config).reconstruct(update, model, _knowledge(batch))
    assert rec.interrupted and rec.status.value == "interrupted"
    assert rec.details["interrupted"] is True and rec.details["budget_exhausted"] is False
    assert rec.details["samples"] == 8  # the interrupted chunk is counted as drawn
    exact = [e < 1e-4 for e in _errors_per_recovery(rec.images, batch.images)]
    assert all(e for c, e in zip(rec.details["certified"], exact, strict=True) if c)


def test_a_time_limit_ends_the_search_like_the_sample_budget() -> None:
    model, batch, update = _synthetic(8, seed=6)
    config = SpearConfig(chunk=4, refine_steps=0, time_limit=1e-9)
    rec = SpearAttack(config=config).reconstruct(update, model, _knowledge(batch))
    assert rec.details["budget_exhausted"] is True
    # One chunk (and its completion sweeps) runs before the limit is checked.
    assert rec.details["samples"] - rec.details["sweeps"] == 4
    with pytest.raises(GradleakError, match="time_limit must be positive"):
        SpearAttack().with_options({"time_limit": 0})
