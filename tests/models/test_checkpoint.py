import pathlib
from pathlib import Path

import pytest
import torch

from gradleak.errors import GradleakError
from gradleak.models import build_model, load_checkpoint, save_checkpoint


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
    assert saved["metadata"] == {"model": "resnet20", "epoch": 3, "lr": 0.1, "tags": ["a"]}


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
