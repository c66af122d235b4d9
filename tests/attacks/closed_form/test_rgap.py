"""R-GAP against inputs known from the client's side."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gradleak.attacks.closed_form.rgap import RGAPAttack, parse_stack, rgap_recover
from gradleak.core.batch import PrivateBatch
from gradleak.core.errors import GradleakError
from gradleak.core.knowledge import Knowledge
from gradleak.core.update import SharedUpdate, UpdateKind
from gradleak.fl import FedSGDClient
from gradleak.models.cnn6 import CNN6

pytestmark = pytest.mark.usefixtures("one_thread")


def _relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).norm() / want.norm())


def _knowledge(batch: PrivateBatch, num_classes: int = 10) -> Knowledge:
    channels = batch.images.shape[1]
    return Knowledge(
        data_shape=tuple(batch.images.shape[1:]),
        num_classes=num_classes,
        batch_size=len(batch),
        mean=(0.0,) * channels,
        std=(1.0,) * channels,
    )


def _case(model: nn.Module, shape: tuple[int, int, int], batch: int = 1, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, *shape, generator=generator)
    labels = torch.randint(0, 10, (batch,), generator=generator)
    data = PrivateBatch(images, labels)
    return data, FedSGDClient(model).compute_update(data)


def _small_cnn6() -> nn.Module:
    torch.manual_seed(0)
    return CNN6(10, 3, (16, 16), widths=(12, 24, 24, 24, 48, 48))


def test_small_cnn6_is_full_rank_and_recovered_exactly() -> None:
    model = _small_cnn6()
    data, update = _case(model, (3, 16, 16))
    result = rgap_recover(update, model, (3, 16, 16))
    assert len(result.layers) == 6 and result.determined
    for layer in result.layers:
        assert layer.rank == layer.unknowns <= layer.equations
    # Deepest layer first; the first conv reads the 3x16x16 image.
    assert result.layers[-1].unknowns == 3 * 16 * 16
    assert result.layers[-1].forward_equations == 12 * 8 * 8
    assert result.layers[-1].gradient_equations == 12 * 3 * 4 * 4
    assert _relative_error(result.image, data.images) < 1e-4


def test_attack_returns_image_label_and_rank_report() -> None:
    model = _small_cnn6()
    data, update = _case(model, (3, 16, 16), seed=1)
    rec = RGAPAttack().reconstruct(update, model, _knowledge(data))
    assert rec.images.shape == data.images.shape
    assert _relative_error(rec.images, data.images) < 1e-4
    assert rec.labels is not None and rec.labels.tolist() == data.labels.tolist()
    assert rec.iterations == 0 and rec.details["determined"] is True
    assert len(rec.details["layers"]) == 6


def test_sigmoid_layers_are_inverted_too() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, stride=2, padding=1),
        nn.Sigmoid(),
        nn.Conv2d(8, 8, 3, stride=1, padding=1),
        nn.Sigmoid(),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 10),
    )
    data, update = _case(model, (1, 8, 8))
    result = rgap_recover(update, model, (1, 8, 8))
    assert result.determined
    assert _relative_error(result.image, data.images) < 1e-3


def test_under_determined_layer_is_reported_and_not_the_input() -> None:
    torch.manual_seed(0)
    # One output channel: 16 forward + 27 gradient equations for 192 unknown pixels.
    model = nn.Sequential(
        nn.Conv2d(3, 1, 3, stride=2, padding=1), nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(16, 10)
    )
    data, update = _case(model, (3, 8, 8))
    result = rgap_recover(update, model, (3, 8, 8))
    (layer,) = result.layers
    assert (layer.unknowns, layer.forward_equations, layer.gradient_equations) == (192, 16, 27)
    assert layer.rank <= 43 and not layer.determined and not result.determined
    assert "UNDER-DETERMINED" in layer.summary()
    assert _relative_error(result.image, data.images) > 0.3


def test_refuses_a_batch_of_two() -> None:
    model = _small_cnn6()
    data, update = _case(model, (3, 16, 16), batch=2)
    with pytest.raises(GradleakError, match="batch-size 1"):
        RGAPAttack().reconstruct(update, model, _knowledge(data))


def test_refuses_a_weight_delta() -> None:
    model = _small_cnn6()
    data, update = _case(model, (3, 16, 16))
    delta = update.scaled(-0.1, UpdateKind.WEIGHT_DELTA)
    with pytest.raises(GradleakError, match="FedSGD"):
        RGAPAttack().reconstruct(delta, model, _knowledge(data))


@pytest.mark.parametrize(
    ("layers", "why"),
    [
        (
            [nn.Conv2d(3, 4, 3, padding=1), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 10)],
            "MaxPool2d",
        ),
        ([nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(256, 10)], "ReLU"),
        ([nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(), nn.Linear(256, 10, bias=False)], "no bias"),
        ([nn.Flatten(), nn.Linear(192, 10)], "Conv2d layers"),
        (
            [
                nn.Conv2d(3, 4, 3, padding=1, groups=1, padding_mode="reflect"),
                nn.Flatten(),
                nn.Linear(256, 10),
            ],
            "pads",
        ),
    ],
)
def test_refuses_unsupported_stacks(layers: list[nn.Module], why: str) -> None:
    with pytest.raises(GradleakError, match=why):
        parse_stack(nn.Sequential(*layers), (3, 8, 8))


class _Skip(nn.Module):
    """A conv stack whose forward adds a skip connection the modules do not show."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.act = nn.LeakyReLU(0.2)
        self.fc = nn.Linear(192, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc((self.act(self.conv(x)) + x).flatten(1))


def test_refuses_a_forward_pass_that_is_not_the_chain() -> None:
    with pytest.raises(GradleakError, match="plain chain"):
        parse_stack(_Skip(), (3, 8, 8))


def test_options_do_not_iterate() -> None:
    attack = RGAPAttack()
    assert attack.name == "rgap" and attack.reads == frozenset({UpdateKind.GRADIENT})
    assert attack.config.iterations == 0 and attack.config.restarts == 1
    assert attack.with_options({"rcond": 1e-8}).config.rcond == 1e-8
    with pytest.raises(GradleakError, match="does not iterate"):
        attack.with_options({"iterations": 10})
    with pytest.raises(GradleakError):
        attack.with_options({"steps": 10})


def test_shared_update_without_the_classifier_is_refused() -> None:
    model = _small_cnn6()
    data, update = _case(model, (3, 16, 16))
    partial = SharedUpdate({k: v for k, v in update.tensors.items() if "classifier" not in k})
    with pytest.raises(GradleakError):
        RGAPAttack().reconstruct(partial, model, _knowledge(data))
