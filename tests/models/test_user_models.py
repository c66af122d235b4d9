"""The user's own models: factory specs, their arguments, building, probing and refusals."""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from gradleak.core.errors import GradleakError
from gradleak.models import build_model, canonical_model_name, is_model_name
from gradleak.models.user import (
    build_user_model,
    check_input_shape,
    check_labels_fit,
    check_model_args,
    describe_model,
    is_factory_spec,
    model_args_from,
    model_label,
    output_classes,
    parse_model_arg,
    probe_input_shape,
)

FACTORIES = """
import torch
from torch import nn

def cnn(num_classes=5, width=4, side=16):
    # A Linear after the convolution fixes the input size to side×side.
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Flatten(),
        nn.Linear(width * side * side, num_classes),
    )

def grey_pooled(num_classes=3):
    # Global pooling: any size runs.
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes),
    )

def mlp(features=3 * 8 * 8, num_classes=4):
    layers = [nn.Flatten(), nn.Linear(features, 16), nn.ReLU(), nn.Linear(16, num_classes)]
    return nn.Sequential(*layers)

def flat_mlp(num_classes=4):
    # Takes flat vectors B×F, not images: no image shape runs.
    return nn.Sequential(nn.Linear(3 * 8 * 8, num_classes))

class Squeezed(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 4 * 4, 1)
    def forward(self, x):
        return self.fc(x.flatten(1))

class Pair(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 4 * 4, 3)
    def forward(self, x):
        out = self.fc(x.flatten(1))
        return out, out

class Integers(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 4 * 4, 3)
    def forward(self, x):
        return self.fc(x.flatten(1)).argmax(1, keepdim=True).expand(-1, 3)

def squeezed():
    return Squeezed()

def pair():
    return Pair()

def integers():
    return Integers()

def no_layers():
    return nn.Sequential(nn.Flatten(), nn.ReLU())

def lazy():
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(3))

def broken(width=2):
    raise RuntimeError("out of widths\\nsecond line")

def not_a_module():
    return {"weights": 1}

NOT_CALLABLE = 3
"""


@pytest.fixture
def factories(tmp_path: Path) -> Path:
    """A file of factories; each test has its own file, so its own module."""
    path = tmp_path / "factories.py"
    path.write_text(textwrap.dedent(FACTORIES))
    return path


def _spec(path: Path, name: str) -> str:
    return f"{path}:{name}"


# --- specs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        "pkg.models:make_net",
        "net:make",
        "models/net.py:make_net",
        "C:\\nets\\n.py:make",
        " a.b:C.build ",
    ],
)
def test_well_formed_specs_are_model_names_without_importing(spec: str) -> None:
    before = set(sys.modules)
    assert is_factory_spec(spec) and is_model_name(spec)
    assert set(sys.modules) == before


@pytest.mark.parametrize(
    "name",
    [
        "lenet",
        "pkg.models:",
        ":make",
        "pkg.models:1x",
        "pkg models:make",
        "pkg.class:make",
        "net.py",
        ".py:make",
        "a.b:c-d",
        3,
        None,
    ],
)
def test_other_strings_are_not_specs(name: object) -> None:
    assert not is_factory_spec(name)


def test_a_spec_is_its_own_canonical_name_and_keeps_its_case() -> None:
    assert canonical_model_name("  My.Models:MakeNet ") == "My.Models:MakeNet"
    assert canonical_model_name("ResNet20") == "resnet20-1"  # registry names as before
    assert model_label("examples/faces_model.py:make_model") == "faces_model.make_model"
    assert model_label("pkg.models:make") == "models.make"
    assert model_label("lenet") == "lenet"


# --- arguments -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("width=16", ("width", 16)),
        ("lr=1e-3", ("lr", 0.001)),
        ("p = 0.5", ("p", 0.5)),
        ("bn=true", ("bn", True)),
        ("bn=False", ("bn", False)),
        ("activation=relu", ("activation", "relu")),
        ("head=null", ("head", None)),
        ("name='16'", ("name", "16")),
        ("eq=a=b", ("eq", "a=b")),
    ],
)
def test_model_arg_values_are_yaml_scalars(text: str, expected: tuple[str, object]) -> None:
    key, value = parse_model_arg(text)
    assert (key, value) == expected and type(value) is type(expected[1])


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("width", "is not KEY=VALUE"),
        ("1x=3", "is not a keyword argument name"),
        ("class=3", "is not a keyword argument name"),
        ("width=", "has no value"),
        ("widths=[1, 2]", "list or mapping"),
    ],
)
def test_bad_model_args_are_one_line(text: str, says: str) -> None:
    with pytest.raises(GradleakError, match=says) as error:
        parse_model_arg(text)
    assert "\n" not in str(error.value)


def test_a_key_given_twice_is_refused() -> None:
    assert model_args_from([("a", 1), ("b", 2)]) == {"a": 1, "b": 2}
    with pytest.raises(GradleakError, match="given twice"):
        model_args_from([("a", 1), ("a", 2)])


def test_model_args_need_a_factory_and_plain_values() -> None:
    assert check_model_args("lenet", {}) == {}
    with pytest.raises(GradleakError, match="built-in model"):
        check_model_args("lenet", {"width": 3})
    with pytest.raises(GradleakError, match="is a built-in model"):
        build_model("lenet", num_classes=3, model_args={"width": 3})
    with pytest.raises(GradleakError, match="not a keyword argument name"):
        check_model_args("pkg:make", {"not valid": 3})
    with pytest.raises(GradleakError, match="model_args w is a set"):
        check_model_args("pkg:make", {"w": {1, 2}})
    assert check_model_args("pkg:make", {"widths": [1, 2], "head": {"k": None}})


# --- building ------------------------------------------------------------------------------


def _same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_the_same_seed_gives_the_same_weights_and_leaves_the_global_rng(factories: Path) -> None:
    spec = _spec(factories, "cnn")
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = build_user_model(spec, {"width": 3}, seed=7)
    assert torch.equal(torch.rand(3), expected_next)  # the caller's RNG is untouched
    b = build_user_model(spec, {"width": 3}, seed=7)
    c = build_user_model(spec, {"width": 3}, seed=8)
    assert _same_state(a, b) and not _same_state(a, c)
    # Through the registry: the same model, whatever classes and size it is asked for.
    d = build_model(
        spec, num_classes=99, in_channels=3, image_size=(16, 16), seed=7, model_args={"width": 3}
    )
    assert _same_state(a, d)
    # The weights are those of the factory run under torch.manual_seed(seed).
    torch.manual_seed(7)
    reference = nn.Conv2d(3, 3, 3, padding=1)
    assert torch.equal(a[0].weight, reference.weight)


def test_a_module_on_the_path_builds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "user_models_pkg_a"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(textwrap.dedent(FACTORIES))
    monkeypatch.syspath_prepend(str(tmp_path))
    model = build_user_model("user_models_pkg_a.nets:mlp", {"num_classes": 6}, seed=0)
    assert describe_model(model).num_classes == 6


def test_registry_build_checks_the_data_shape(factories: Path) -> None:
    spec = _spec(factories, "cnn")
    with pytest.raises(GradleakError) as error:
        build_model(spec, num_classes=5, in_channels=3, image_size=(32, 32), seed=0)
    assert str(error.value) == (
        f"model {spec} takes 3×16×16 images, not the data's 3×32×32; use --image-size 16 "
        "with a dataset that is resized (folder)"
    )


# --- probing -------------------------------------------------------------------------------


def test_an_mlp_is_probed_from_its_first_linear(factories: Path) -> None:
    rgb = build_user_model(_spec(factories, "mlp"), seed=0)
    assert probe_input_shape(rgb) == (3, (8, 8))
    assert probe_input_shape(rgb, (3, (32, 32))) == (3, (8, 8))
    # 784 inputs: no 3-channel square image; a 1-channel 28×28 one.
    grey = build_user_model(_spec(factories, "mlp"), {"features": 784}, seed=0)
    assert probe_input_shape(grey, (3, (32, 32))) == (1, (28, 28))
    # 3·16·12 inputs: the data's own non-square shape is tried first.
    wide = build_user_model(_spec(factories, "mlp"), {"features": 3 * 16 * 12}, seed=0)
    assert probe_input_shape(wide, (3, (16, 12))) == (3, (16, 12))


def test_a_cnn_takes_the_data_size_first_then_common_sizes(factories: Path) -> None:
    fixed = build_user_model(_spec(factories, "cnn"), {"side": 28}, seed=0)
    assert probe_input_shape(fixed) == (3, (28, 28))  # 32 fails, 28 is next
    assert probe_input_shape(fixed, (3, (28, 28))) == (3, (28, 28))
    pooled = build_user_model(_spec(factories, "grey_pooled"), seed=0)
    assert probe_input_shape(pooled, (3, (40, 24))) == (1, (40, 24))  # channels: its conv's
    assert probe_input_shape(pooled) == (1, (32, 32))


def test_probing_changes_nothing_in_the_model(factories: Path) -> None:
    model = build_user_model(_spec(factories, "grey_pooled"), seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    shape = describe_model(model)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert shape.batch_norm and shape.num_classes == 3 and shape.input == "1×32×32"
    model.eval()
    describe_model(model)
    assert not model.training


def test_check_input_shape_reports_the_shape(factories: Path) -> None:
    model = build_user_model(_spec(factories, "cnn"), seed=0)
    shape = check_input_shape(model, 3, (16, 16), name="m")
    assert (shape.channels, shape.image_size, shape.num_classes, shape.batch_norm) == (
        3,
        (16, 16),
        5,
        False,
    )


@pytest.mark.parametrize(
    ("factory", "says"),
    [
        (
            "squeezed",
            "gives a torch.float32 tensor of shape 2×1 for a batch of 2 images, not class logits",
        ),
        ("pair", "gives a tuple for a batch of 2 images"),
        ("integers", "gives a torch.int64 tensor of shape 2×3"),
    ],
)
def test_outputs_that_are_not_logits_are_refused(factories: Path, factory: str, says: str) -> None:
    model = build_user_model(_spec(factories, factory), seed=0)
    with pytest.raises(GradleakError, match=says):
        describe_model(model, name="m")


def test_output_classes_is_the_logit_width(factories: Path) -> None:
    model = build_user_model(_spec(factories, "mlp"), {"num_classes": 9}, seed=0)
    assert output_classes(model, 3, (8, 8)) == 9


@pytest.mark.parametrize(
    ("factory", "says"),
    [
        ("no_layers", "has no Conv2d or Linear layer"),
        ("lazy", "holds a lazy layer"),
        ("flat_mlp", "runs on none of the image shapes tried (3×8×8); at 3×8×8: RuntimeError"),
    ],
)
def test_models_without_a_readable_input_are_refused(
    factories: Path, factory: str, says: str
) -> None:
    model = build_user_model(_spec(factories, factory), seed=0)
    with pytest.raises(GradleakError, match=re.escape(says)) as error:
        probe_input_shape(model, name="m")
    assert "\n" not in str(error.value)


def test_a_mlp_whose_inputs_are_no_image_is_refused(factories: Path) -> None:
    model = build_user_model(_spec(factories, "mlp"), {"features": 7}, seed=0)
    with pytest.raises(GradleakError, match="Linear layer of 7 inputs, which is no image"):
        probe_input_shape(model, name="m")


# --- refusals of the import and the call ----------------------------------------------------


def _refusal(spec: str, args: dict[str, object] | None = None) -> str:
    with pytest.raises(GradleakError) as error:
        build_user_model(spec, args, seed=0)
    message = str(error.value)
    assert "\n" not in message
    return message


def test_import_and_call_failures_are_one_line_each(factories: Path, tmp_path: Path) -> None:
    assert _refusal("surely_missing_pkg_x.nets:make") == (
        "cannot import module 'surely_missing_pkg_x.nets' (--model surely_missing_pkg_x.nets:"
        "make): No module named 'surely_missing_pkg_x'; check the name, run from the folder "
        "that holds it or install it"
    )
    assert _refusal(_spec(factories, "missing")).startswith(
        f"{factories} has no attribute 'missing' (--model {factories}:missing); it defines: "
    )
    assert "'NOT_CALLABLE' in" in _refusal(_spec(factories, "NOT_CALLABLE"))
    assert "is of type int, not callable" in _refusal(_spec(factories, "NOT_CALLABLE"))
    assert _refusal(_spec(factories, "broken"), {"width": 3}) == (
        f"model factory {factories}:broken(width=3) raised RuntimeError: out of widths"
    )
    assert _refusal(_spec(factories, "not_a_module")) == (
        f"model factory {factories}:not_a_module returned a value of type dict, not a torch "
        "nn.Module; return the model itself"
    )
    assert _refusal(_spec(factories, "cnn"), {"depth": 3}) == (
        f"model factory {factories}:cnn cannot be called with depth=3: got an unexpected "
        "keyword argument 'depth'; it takes num_classes, width, side"
    )
    assert _refusal(f"{tmp_path / 'nowhere.py'}:make").startswith("model file not found: ")
    folder = tmp_path / "folder.py"
    folder.mkdir()
    assert _refusal(f"{folder}:make").startswith(f"model file {folder} is a folder")
    syntax = tmp_path / "syntax.py"
    syntax.write_text("def make(:\n")
    assert _refusal(f"{syntax}:make").startswith(
        f"running model file {syntax} (--model {syntax}:make) failed: SyntaxError: "
    )
    failing = tmp_path / "failing_import.py"
    failing.write_text("import surely_missing_pkg_y\n")
    assert _refusal(f"{failing}:make").endswith(
        "ModuleNotFoundError: No module named 'surely_missing_pkg_y'"
    )


def test_a_module_that_fails_on_import_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "user_models_failing_b.py").write_text("raise ValueError('bad config')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _refusal("user_models_failing_b:make") == (
        "importing module 'user_models_failing_b' (--model user_models_failing_b:make) "
        "failed: ValueError: bad config"
    )


def test_labels_beyond_the_classes_are_refused() -> None:
    check_labels_fit(torch.tensor([0, 4]), 5, name="m")
    check_labels_fit(torch.tensor([], dtype=torch.long), 2, name="m")
    with pytest.raises(GradleakError) as error:
        check_labels_fit(torch.tensor([1, 5, 2]), 5, name="m")
    assert str(error.value).startswith("labels reach 5 but the model m outputs only 5 classes")
