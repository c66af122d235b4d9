import copy

import pytest
import torch
from torch import nn

from gradleak.core.errors import GradleakError
from gradleak.models import available_models, build_model, classifier_layer

from .functional import input_grads

ALL_NAMES = [
    "lenet",
    "cnn6",
    "convnet",
    "convnet-16",
    "mlp",
    "mlp-64",
    "resnet20",
    "resnet20-2",
    "resnet32",
    "resnet56",
]
# Narrow variants keep the torch.func tests fast; each family appears at least once.
SMALL_NAMES = ["lenet", "convnet-8", "mlp-32", "resnet20", "resnet32-1", "resnet56"]


@pytest.mark.parametrize("name", ALL_NAMES)
@pytest.mark.parametrize(("channels", "size"), [(3, (32, 32)), (1, (28, 28))])
def test_output_shape(name: str, channels: int, size: tuple[int, int]) -> None:
    model = build_model(name, num_classes=7, in_channels=channels, image_size=size).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, channels, *size))
    assert logits.shape == (2, 7)


def test_large_images_work() -> None:
    model = build_model("lenet", num_classes=1000, image_size=(224, 224)).eval()
    assert model(torch.randn(1, 3, 224, 224)).shape == (1, 1000)


def test_available_models_lists_every_family() -> None:
    assert available_models() == [
        "lenet",
        "cnn6",
        "convnet[-W]",
        "mlp[D][-W]",
        "resnet20[-K]",
        "resnet32[-K]",
        "resnet56[-K]",
        "resnet18",
    ]


def test_width_suffixes_are_applied() -> None:
    convnet = build_model("convnet-8", num_classes=10)
    assert classifier_layer(convnet)[1].in_features == 4 * 8 * 9
    mlp = build_model("mlp-48", num_classes=10)
    assert classifier_layer(mlp)[1].in_features == 48
    assert build_model(" LeNet ", num_classes=10).classifier.in_features == 768


@pytest.mark.parametrize("name", ["foo", "resnet19", "convnet-", "mlp-x", "lenet-5", ""])
def test_unknown_name_lists_choices(name: str) -> None:
    with pytest.raises(GradleakError, match="unknown model") as info:
        build_model(name, num_classes=10)
    message = str(info.value)
    assert "\n" not in message
    for pattern in available_models():
        assert pattern in message


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_classes": 0},
        {"num_classes": 10, "in_channels": 0},
        {"num_classes": 10, "image_size": (32,)},
        {"num_classes": 10, "image_size": (32, -1)},
        {"num_classes": 10, "seed": -1},
        {"num_classes": 10, "seed": 1.5},
    ],
)
def test_bad_arguments_raise(kwargs: dict) -> None:
    with pytest.raises(GradleakError):
        build_model("lenet", **kwargs)


@pytest.mark.parametrize("name", ["convnet-0", "mlp-0", "resnet20-0"])
def test_zero_width_raises(name: str) -> None:
    with pytest.raises(GradleakError, match="positive integer"):
        build_model(name, num_classes=10)


def test_convnet_rejects_tiny_images() -> None:
    with pytest.raises(GradleakError, match="at least 9x9"):
        build_model("convnet-8", num_classes=10, image_size=(8, 8))


def _flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([t.flatten().float() for t in model.state_dict().values()])


@pytest.mark.parametrize("name", ["lenet", "resnet20", "mlp-32", "convnet-8"])
def test_seed_is_reproducible_and_leaves_global_rng_alone(name: str) -> None:
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    first = build_model(name, num_classes=10, seed=3)
    second = build_model(name, num_classes=10, seed=3)
    other = build_model(name, num_classes=10, seed=4)
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(_flat(first), _flat(second))
    assert not torch.equal(_flat(first), _flat(other))


def test_seed_none_draws_from_global_rng() -> None:
    torch.manual_seed(5)
    first = build_model("lenet", num_classes=10, seed=None)
    torch.manual_seed(5)
    second = build_model("lenet", num_classes=10, seed=None)
    assert torch.equal(_flat(first), _flat(second))


@pytest.mark.parametrize("name", ALL_NAMES)
def test_classifier_layer_is_the_output_layer(name: str) -> None:
    model = build_model(name, num_classes=10)
    layer_name, layer = classifier_layer(model)
    assert layer_name == "classifier"
    assert isinstance(layer, nn.Linear)
    assert layer.out_features == 10


def test_classifier_layer_picks_the_last_linear() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    layer_name, layer = classifier_layer(model)
    assert layer_name == "2"
    assert layer is model[2]


def test_classifier_layer_without_linear_raises() -> None:
    with pytest.raises(GradleakError, match="no nn.Linear"):
        classifier_layer(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()))


def test_mlp_first_layer_is_biased_linear() -> None:
    model = build_model("mlp-32", num_classes=10, in_channels=1, image_size=(28, 28))
    first = next(m for m in model.modules() if isinstance(m, nn.Linear))
    assert first.in_features == 28 * 28
    assert first.bias is not None
    assert sum(isinstance(m, nn.Linear) for m in model.modules()) == 3


@pytest.mark.parametrize("name", SMALL_NAMES)
def test_input_gradient_under_vmap(name: str) -> None:
    model = build_model(name, num_classes=5, image_size=(16, 16)).eval()
    xs = torch.randn(3, 2, 3, 16, 16)
    ys = torch.randint(0, 5, (3, 2))
    grads = input_grads(model, xs, ys)
    assert grads.shape == xs.shape
    assert torch.isfinite(grads).all()
    assert grads.abs().sum() > 0
    # The vmapped result matches a plain per-trial autograd computation.
    x = xs[1].clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(model(x), ys[1]).backward()
    torch.testing.assert_close(grads[1], x.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["convnet-8", "resnet20"])
def test_train_mode_batch_norm_under_vmap(name: str) -> None:
    model = copy.deepcopy(build_model(name, num_classes=5, image_size=(16, 16)))
    torch.func.replace_all_batch_norm_modules_(model)
    model.train()
    xs = torch.randn(2, 4, 3, 16, 16)
    ys = torch.randint(0, 5, (2, 4))
    grads = input_grads(model, xs, ys)
    assert grads.shape == xs.shape
    assert torch.isfinite(grads).all()


def test_mlp_depth_in_the_name() -> None:
    model = build_model("mlp3-64", num_classes=17)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [m.out_features for m in linears] == [64, 64, 64, 17]
