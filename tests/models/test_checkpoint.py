import pathlib
from pathlib import Path

import pytest
import torch

from gradleak.core.errors import GradleakError
from gradleak.models import (
    build_model,
    check_checkpoint_model,
    load_checkpoint,
    read_checkpoint_metadata,
    save_checkpoint,
)


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_round_trip_with_metadata(tmp_path: Path) -> None:
    source = build_model("resnet20", num_classes=10, seed=0)
    path = save_checkpoint(
        source, tmp_path / "sub" / "ckpt.pt", model="resnet20", epoch=3, lr=0.1, tags=["a"]
    )
    target = build_model("resnet20", num_classes=10, seed=1)
    assert not _same(source, target)
    assert load_checkpoint(target, path) is target
    assert _same(source, target)
    saved = torch.load(path, weights_only=True)
    # The model is recorded in its canonical spelling.
    assert saved["metadata"] == {"model": "resnet20-1", "epoch": 3, "lr": 0.1, "tags": ["a"]}


@pytest.mark.parametrize("wrap", ["raw", "state_dict", "model", "module_prefix"])
def test_accepted_layouts(tmp_path: Path, wrap: str) -> None:
    source = build_model("lenet", num_classes=10, seed=0)
    state = source.state_dict()
    payload = {
        "raw": state,
        "state_dict": {"state_dict": state, "epoch": 1},
        "model": {"model": state, "optimizer": {}},
        "module_prefix": {f"module.{k}": v for k, v in state.items()},
    }[wrap]
    path = tmp_path / "ckpt.pt"
    torch.save(payload, path)
    target = load_checkpoint(build_model("lenet", num_classes=10, seed=1), str(path))
    assert _same(source, target)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.pt"
    with pytest.raises(GradleakError, match="not found") as info:
        load_checkpoint(build_model("lenet", num_classes=10), path)
    assert str(path) in str(info.value)


class _Payload:
    """Pickles to a call that would create a marker file if anything unpickled it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (pathlib.Path.touch, (self.marker,))


def test_pickled_code_is_refused_and_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": _Payload(marker)}}, path)
    with pytest.raises(GradleakError, match="not a tensors-only checkpoint"):
        load_checkpoint(build_model("lenet", num_classes=10), path)
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"hello, not a checkpoint", b"PK\x03\x04broken"])
def test_unreadable_files(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(GradleakError, match="not a tensors-only checkpoint"):
        load_checkpoint(build_model("lenet", num_classes=10), path)


@pytest.mark.parametrize("payload", [[1, 2, 3], {}, {"epoch": 3}, {"w": 1.0}])
def test_no_state_dict_inside(tmp_path: Path, payload: object) -> None:
    path = tmp_path / "ckpt.pt"
    torch.save(payload, path)
    with pytest.raises(GradleakError, match="no state_dict"):
        load_checkpoint(build_model("lenet", num_classes=10), path)


def test_checkpoint_for_other_architecture(tmp_path: Path) -> None:
    path = save_checkpoint(build_model("lenet", num_classes=10), tmp_path / "lenet.pt")
    with pytest.raises(GradleakError, match="another model") as info:
        load_checkpoint(build_model("resnet20", num_classes=10), path)
    message = str(info.value)
    assert "missing keys conv1.weight" in message
    assert "unexpected keys features.0.weight" in message
    assert "more)" in message and "\n" not in message


def test_shape_mismatch(tmp_path: Path) -> None:
    path = save_checkpoint(build_model("lenet", num_classes=10), tmp_path / "lenet.pt")
    target = build_model("lenet", num_classes=100, seed=5)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(GradleakError, match="shape mismatches classifier.weight"):
        load_checkpoint(target, path)
    # A rejected checkpoint leaves the model untouched.
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())


def test_metadata_must_be_primitive(tmp_path: Path) -> None:
    model = build_model("lenet", num_classes=10)
    with pytest.raises(GradleakError, match="metadata 'opt'"):
        save_checkpoint(model, tmp_path / "x.pt", opt=torch.optim.SGD(model.parameters(), 0.1))
    assert not (tmp_path / "x.pt").exists()


def test_metadata_is_read_back_without_the_weights(tmp_path: Path) -> None:
    model = build_model("lenet", num_classes=10)
    path = save_checkpoint(model, tmp_path / "m.pt", model="lenet", epoch=2, image_size=[28, 28])
    assert read_checkpoint_metadata(path) == {"model": "lenet", "epoch": 2, "image_size": [28, 28]}
    raw = tmp_path / "raw.pt"
    torch.save(model.state_dict(), raw)
    assert read_checkpoint_metadata(raw) == {}
    with pytest.raises(GradleakError, match="not found"):
        read_checkpoint_metadata(tmp_path / "nope.pt")


def test_metadata_reading_refuses_pickled_code(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    path = tmp_path / "evil.pt"
    torch.save({"metadata": {"model": _Payload(marker)}}, path)
    with pytest.raises(GradleakError, match="not a tensors-only checkpoint"):
        read_checkpoint_metadata(path)
    assert not marker.exists()


def test_checkpoint_for_lenet_is_refused_for_resnet20(tmp_path: Path) -> None:
    path = save_checkpoint(build_model("lenet", num_classes=10), tmp_path / "l.pt", model="lenet")
    with pytest.raises(GradleakError) as info:
        check_checkpoint_model(path, "resnet20")
    message = str(info.value)
    assert message == (
        f"checkpoint {path} was saved from model 'lenet', not 'resnet20'; "
        "pass --model lenet or a checkpoint saved from resnet20"
    )


@pytest.mark.parametrize(
    ("saved", "asked"),
    [
        ("lenet", "LeNet"),
        ("resnet20", "resnet20-1"),
        ("convnet-64", "convnet"),
        ("mlp", "mlp-1024"),
    ],
)
def test_same_model_spelled_differently_passes(tmp_path: Path, saved: str, asked: str) -> None:
    path = save_checkpoint(build_model("lenet", num_classes=10), tmp_path / "c.pt", model=saved)
    check_checkpoint_model(path, asked)


def test_other_width_is_another_model(tmp_path: Path) -> None:
    path = save_checkpoint(
        build_model("lenet", num_classes=10), tmp_path / "c.pt", model="resnet20"
    )
    with pytest.raises(GradleakError, match="saved from model 'resnet20-1', not 'resnet20-4'"):
        check_checkpoint_model(path, "resnet20-4")


def test_checkpoint_without_a_model_name_passes_to_the_shape_check(tmp_path: Path) -> None:
    lenet = build_model("lenet", num_classes=10)
    raw = tmp_path / "raw.pt"
    torch.save(lenet.state_dict(), raw)
    unnamed = save_checkpoint(lenet, tmp_path / "unnamed.pt", epoch=1)
    for path in (raw, unnamed):
        check_checkpoint_model(path, "resnet20")
        with pytest.raises(GradleakError, match="another model"):
            load_checkpoint(build_model("resnet20", num_classes=10), path)


def test_a_failed_save_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", fail)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(build_model("lenet", num_classes=10), tmp_path / "c.pt")
    assert list(tmp_path.iterdir()) == []
