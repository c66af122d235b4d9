"""Robbing the Fed's imprint attack against images known from the client's side."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from gradleak.attacks.malicious.imprint import (
    IMPRINT_BIAS,
    IMPRINT_WEIGHT,
    ImprintAttack,
    ImprintedModel,
    bin_thresholds,
    read_imprint,
)
from gradleak.attacks.registry import get
from gradleak.core.batch import PrivateBatch
from gradleak.core.errors import GradleakError
from gradleak.core.knowledge import Knowledge
from gradleak.fl import FedSGDClient
from gradleak.metrics.image import EXACT_PSNR_DB
from gradleak.scenario import RunConfig
from gradleak.scenario.plan import plan_run
from gradleak.scenario.run import attack_case
from gradleak.studies.peers import peer_attacks

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE = (3, 6, 6)


def _knowledge(batch_size: int, *, malicious: bool = True) -> Knowledge:
    return Knowledge(
        data_shape=SHAPE,
        num_classes=4,
        batch_size=batch_size,
        mean=(0.0,) * 3,
        std=(1.0,) * 3,
        server_modifies_model=malicious,
    )


def _small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(108, 16), nn.ReLU(), nn.Linear(16, 4))


def _bins_of(model: ImprintedModel, images: torch.Tensor) -> list[int]:
    """Truth side: the bin each image falls in (-1: below the lowest threshold)."""
    block = model.imprint
    statistic = images.flatten(1).double() @ block.direction.double()
    return [int(b) - 1 for b in torch.searchsorted(block.thresholds.double(), statistic)]


def _images_in_distinct_bins(model: ImprintedModel, count: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    chosen: list[torch.Tensor] = []
    taken: set[int] = set()
    while len(chosen) < count:
        image = torch.randn(SHAPE, generator=generator)
        (bin_,) = _bins_of(model, image.unsqueeze(0))
        if bin_ >= 0 and bin_ not in taken:
            taken.add(bin_)
            chosen.append(image)
    return torch.stack(chosen)


def _relative_errors(got: torch.Tensor, want: torch.Tensor) -> list[float]:
    """Per true image, the relative error of its closest recovered image."""
    errors = []
    for image in want:
        distances = (got - image).flatten(1).norm(dim=1) / image.norm()
        errors.append(float(distances.min()))
    return errors


def test_every_image_in_a_bin_of_its_own_is_recovered_exactly() -> None:
    attack = ImprintAttack().with_options({"bins": 64})
    knowledge = _knowledge(8)
    model = attack.modify_model(_small_model(), knowledge, seed=3)
    images = _images_in_distinct_bins(model, 8)
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    update = FedSGDClient(model).compute_update(PrivateBatch(images, labels))
    rec = attack.reconstruct(update, model, knowledge)
    assert rec.images.shape == images.shape
    assert max(_relative_errors(rec.images, images)) < 1e-4
    assert rec.details["occupied_bins"] == 8
    assert rec.details["images_not_separated"] == 0
    assert sorted(b for bins in rec.details["bins_read"] for b in bins) == sorted(
        _bins_of(model, images)
    )


def test_two_images_in_one_bin_give_one_mixture_and_the_diagnostics_say_so() -> None:
    attack = ImprintAttack().with_options({"bins": 8})
    knowledge = _knowledge(3)
    model = attack.modify_model(_small_model(), knowledge, seed=3)
    first, other = _images_in_distinct_bins(model, 2)
    # A scaled copy of `first` shifted along nothing the statistic sees stays in its bin.
    twin = first + 1e-2 * torch.randn(SHAPE, generator=torch.Generator().manual_seed(5))
    images = torch.stack([first, twin, other])
    bins = _bins_of(model, images)
    assert bins[0] == bins[1] != bins[2]
    update = FedSGDClient(model).compute_update(PrivateBatch(images, torch.tensor([0, 1, 2])))
    rec = attack.reconstruct(update, model, knowledge)
    errors = _relative_errors(rec.images, images)
    assert errors[2] < 1e-4  # alone in its bin
    assert rec.details["occupied_bins"] == 2
    assert rec.details["images_not_separated"] == 1
    assert rec.details["empty_rows"] == 1


def test_bin_thresholds_cut_the_assumed_distribution_into_equal_shares() -> None:
    thresholds = bin_thresholds(3, 2.0)
    normal = torch.distributions.Normal(0.0, 2.0)
    shares = normal.cdf(thresholds.float())
    assert torch.allclose(shares, torch.tensor([0.25, 0.5, 0.75]), atol=1e-6)
    assert bool((thresholds.diff() > 0).all())


def test_read_imprint_divides_bin_differences() -> None:
    # Two bins' cumulative sums: bin 0 holds 2·x0, bin 1 holds 3·x1.
    x0, x1 = torch.tensor([1.0, 2.0]), torch.tensor([-1.0, 4.0])
    weight = torch.stack([2 * x0 + 3 * x1, 3 * x1])
    bias = torch.tensor([5.0, 3.0])
    reading = read_imprint(weight, bias, 3)
    assert reading.occupied == 2 and reading.found == 2
    assert torch.allclose(reading.features, torch.stack([x1, x0, torch.zeros(2)]))
    assert reading.bins == ((1,), (0,), ())


def test_read_imprint_merges_one_input_split_over_bins() -> None:
    # x0 moved from bin 2 to bin 0 during local training: both parts read x0.
    x0, x1 = torch.tensor([1.0, 2.0]), torch.tensor([-1.0, 4.0])
    weight = torch.stack([0.5 * x0 + 0.2 * x1 + 0.25 * x0, 0.2 * x1 + 0.25 * x0, 0.25 * x0])
    bias = torch.tensor([0.5 + 0.2 + 0.25, 0.2 + 0.25, 0.25])
    reading = read_imprint(weight, bias, 2)
    assert reading.occupied == 3 and reading.found == 2
    assert torch.allclose(reading.features, torch.stack([x0, x1]))
    assert reading.bins == ((0, 2), (1,))


@pytest.mark.parametrize(
    "protocol",
    [
        {"protocol": "fedavg", "local_steps": 5},
        {"users": 4},
        {"protocol": "fedavg", "local_steps": 5, "users": 4},
    ],
    ids=["fedavg-5-steps", "4-users-averaged", "both"],
)
def test_imprint_reads_the_clients_images_under_fedavg_and_aggregation(protocol) -> None:
    batch = 4 if protocol.get("users") else 2
    config = RunConfig(
        attack="imprint",
        model="lenet",
        batch_size=batch // protocol.get("users", 1) if "users" in protocol else batch,
        indices=tuple(range(batch)) if "users" in protocol else (0,),
        malicious_server=True,
        attack_options={"bins": 512},
        progress=False,
        **protocol,
    )
    outcome = attack_case(config)
    model = outcome.attacked.model
    assert isinstance(model, ImprintedModel)
    truth = outcome.case.client.batch.images
    bins = _bins_of(model, truth)
    alone = [i for i, b in enumerate(bins) if b >= 0 and bins.count(b) == 1]
    assert alone, "the bundled images should fall in distinct bins at 512 bins"
    psnrs = [outcome.evaluation.per_image[i]["psnr"] for i in alone]
    assert min(psnrs) >= EXACT_PSNR_DB
    assert outcome.evaluation.exact_fraction == pytest.approx(len(alone) / len(bins))


def test_an_honest_server_refuses_imprint_before_any_work() -> None:
    with pytest.raises(GradleakError, match="--malicious-server"):
        plan_run(RunConfig(attack="imprint", model="lenet", progress=False))
    with pytest.raises(GradleakError, match="modify_model"):
        ImprintAttack().modify_model(_small_model(), _knowledge(1, malicious=False))


def test_imprint_refuses_a_model_it_did_not_send() -> None:
    model = _small_model()
    images = torch.randn(2, *SHAPE)
    update = FedSGDClient(model).compute_update(PrivateBatch(images, torch.tensor([0, 1])))
    with pytest.raises(GradleakError, match="no imprint block"):
        ImprintAttack().reconstruct(update, model, _knowledge(2))


def test_fewer_than_two_bins_and_unknown_statistics_are_refused() -> None:
    with pytest.raises(GradleakError, match="at least 2 bins"):
        get("imprint").with_options({"bins": 1})
    with pytest.raises(GradleakError, match="random, mean"):
        get("imprint").with_options({"statistic": "median"})


def test_peers_have_no_server_to_imprint() -> None:
    assert "imprint" not in peer_attacks()


def test_the_imprinted_model_names_the_block_first() -> None:
    model = ImprintAttack().with_options({"bins": 4}).modify_model(_small_model(), _knowledge(1))
    names = [name for name, _ in model.named_parameters()]
    assert names[:2] == [IMPRINT_WEIGHT, IMPRINT_BIAS]
    assert all(name.startswith("body.") for name in names[2:])


def test_the_imprint_block_leaves_the_model_almost_unchanged() -> None:
    honest = _small_model()
    model = ImprintAttack().modify_model(honest, _knowledge(1))
    images = torch.randn(16, *SHAPE)
    with torch.no_grad():
        shift = (model(images) - honest(images)).abs().max()
    assert 0 < float(shift) < 0.1


def test_cli_imprint_needs_a_malicious_server_and_two_bins(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from tests.cli.running import cli_exit, one_line_error

    base = ["attack", "--attack", "imprint", "--out", str(tmp_path / "r"), "--no-progress"]
    assert cli_exit(base) == 2
    assert "--malicious-server" in one_line_error(capsys)
    assert cli_exit([*base, "--malicious-server", "--bins", "1"]) == 2
    assert "at least 2 bins" in one_line_error(capsys)
    assert not (tmp_path / "r").exists()


def test_cli_imprint_on_a_captured_update_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from tests.cli.running import cli_exit, one_line_error

    update = tmp_path / "u.pt"
    torch.save({"x": torch.zeros(1)}, update)
    assert cli_exit(["attack", "--attack", "imprint", "--update", str(update)]) == 2
    assert "captured update" in one_line_error(capsys)


def test_images_below_every_threshold_give_an_empty_reading_not_an_error() -> None:
    attack = ImprintAttack().with_options({"bins": 4})
    knowledge = _knowledge(2)
    model = attack.modify_model(_small_model(), knowledge, seed=3)
    low = model.imprint.thresholds.min().item() - 1.0
    # Images whose statistic lies below q_1: no neuron fires.
    direction = model.imprint.direction
    images = (low * direction / direction.dot(direction)).reshape(1, *SHAPE).repeat(2, 1, 1, 1)
    assert all(b < 0 for b in _bins_of(model, images))
    update = FedSGDClient(model).compute_update(PrivateBatch(images, torch.tensor([0, 1])))
    rec = attack.reconstruct(update, model, knowledge)
    assert rec.details["occupied_bins"] == 0 and rec.details["empty_rows"] == 2
    assert torch.equal(rec.images, torch.zeros_like(rec.images))


def test_an_honest_server_leaves_run_digests_as_they_were() -> None:
    from gradleak.studies.cells import described_config

    honest = RunConfig(attack="ig")
    assert "malicious_server" not in honest.result_settings()
    assert "malicious_server" not in described_config(honest)
    malicious = RunConfig(attack="imprint", malicious_server=True)
    assert malicious.result_settings()["malicious_server"] is True
    assert described_config(malicious)["malicious_server"] is True


def test_the_same_seed_sends_the_same_block() -> None:
    attack = ImprintAttack().with_options({"bins": 8})
    state = torch.random.get_rng_state()
    first = attack.modify_model(_small_model(), _knowledge(1), seed=3).imprint
    again = attack.modify_model(_small_model(), _knowledge(1), seed=3).imprint
    other = attack.modify_model(_small_model(), _knowledge(1), seed=4).imprint
    assert torch.equal(first.direction, again.direction)
    assert not torch.equal(first.direction, other.direction)
    # Building the block draws nothing from the global generator.
    torch.random.set_rng_state(state)
    attack.modify_model(nn.Identity(), _knowledge(1), seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
