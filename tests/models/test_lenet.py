import pytest
import torch
from torch import nn

from gradleak.models import build_model
from gradleak.models.lenet import LeNet

from .functional import autograd_matching_grad, gradient_matching_grads, param_grads


@pytest.mark.parametrize(
    ("channels", "size", "features"),
    [(3, (32, 32), 768), (1, (28, 28), 588), (3, (224, 224), 12 * 56 * 56), (3, (32, 28), 672)],
)
def test_classifier_inputs(channels: int, size: tuple[int, int], features: int) -> None:
    model = LeNet(10, channels, size)
    assert model.classifier.in_features == features
    assert model(torch.randn(2, channels, *size)).shape == (2, 10)


def test_architecture_matches_dlg() -> None:
    model = LeNet(100)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.stride for c in convs] == [(2, 2), (2, 2), (1, 1)]
    assert all(c.kernel_size == (5, 5) and c.padding == (2, 2) for c in convs)
    assert all(c.out_channels == 12 and c.bias is not None for c in convs)
    assert sum(isinstance(m, nn.Sigmoid) for m in model.modules()) == 3
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())


def test_uniform_init_bounds_and_spread() -> None:
    model = build_model("lenet", num_classes=10, seed=0)
    values = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert values.min() >= -0.5 and values.max() <= 0.5
    # Spread over the whole interval, not the narrow default init.
    assert values.min() < -0.49 and values.max() > 0.49
    assert abs(values.mean()) < 0.02
    assert 0.27 < values.std() < 0.31  # std of U(-0.5, 0.5) is 0.2887
    for parameter in model.parameters():
        assert parameter.abs().max() > 0.25  # biases too are drawn uniformly


def test_default_init_when_disabled() -> None:
    torch.manual_seed(0)
    model = LeNet(10, uniform_init=False)
    first_conv = model.features[0]
    assert first_conv.weight.abs().max() < 0.2


def test_double_backward_matches_autograd() -> None:
    model = build_model("lenet", num_classes=10, image_size=(16, 16), seed=1)
    true_x = torch.randn(2, 3, 16, 16)
    ys = torch.tensor([[3, 7], [3, 7]])
    target = param_grads(model, true_x, ys[0])
    xs = torch.randn(2, 2, 3, 16, 16)
    grads = gradient_matching_grads(model, xs, ys, target)
    assert grads.shape == xs.shape
    assert torch.isfinite(grads).all() and grads.abs().sum() > 0
    expected = autograd_matching_grad(model, xs[0], ys[0], target)
    torch.testing.assert_close(grads[0], expected, rtol=1e-4, atol=1e-6)
    # At the true input the mismatch is at its minimum, so its gradient vanishes.
    at_truth = gradient_matching_grads(model, true_x[None], ys[:1], target)
    assert at_truth.abs().max() < 1e-5
