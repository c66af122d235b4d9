"""Checkpoint errors name the real culprit: a folder, non-finite weights, a wrong dtype."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gradleak.core.errors import GradleakError
from gradleak.models import build_model, check_checkpoint_model, load_checkpoint, save_checkpoint


def _lenet() -> torch.nn.Module:
    return build_model("lenet", num_classes=10, seed=0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weights_are_reported_at_load_naming_the_tensor(
    tmp_path: Path, bad: float
) -> None:
    model = _lenet()
    with torch.no_grad():
        model.classifier.weight[3, 4] = bad
    path = save_checkpoint(model, tmp_path / "diverged.pt", model="lenet")
    with pytest.raises(GradleakError) as err:
        load_checkpoint(_lenet(), path)
    assert str(err.value).startswith(
        f"checkpoint {path} holds non-finite values in classifier.weight"
    )


def test_integer_buffers_are_not_checked_for_finiteness(tmp_path: Path) -> None:
    model = build_model("resnet20", num_classes=10, seed=0)
    path = save_checkpoint(model, tmp_path / "r.pt")
    assert any(t.dtype == torch.int64 for t in model.state_dict().values())
    load_checkpoint(build_model("resnet20", num_classes=10, seed=1), path)


def test_a_folder_names_its_one_checkpoint(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    with pytest.raises(GradleakError, match="is a folder, not a file; pass the path of a saved"):
        load_checkpoint(_lenet(), folder)
    inside = save_checkpoint(_lenet(), folder / "final.pt")
    for call in (
        lambda: load_checkpoint(_lenet(), folder),
        lambda: check_checkpoint_model(folder, "lenet"),
    ):
        with pytest.raises(GradleakError) as err:
            call()
        assert (
            str(err.value) == f"checkpoint {folder} is a folder, not a file; did you mean {inside}?"
        )
    save_checkpoint(_lenet(), folder / "epoch1.pt")
    with pytest.raises(GradleakError, match="pass one of its 2 .pt files"):
        load_checkpoint(_lenet(), folder)


@pytest.mark.parametrize(
    ("dtype", "kind"),
    [(torch.complex64, "complex"), (torch.int32, "integer"), (torch.bool, "boolean")],
)
def test_a_tensor_of_another_kind_of_dtype_is_refused(
    tmp_path: Path, dtype: torch.dtype, kind: str
) -> None:
    state = _lenet().state_dict()
    state["classifier.bias"] = state["classifier.bias"].to(dtype)
    path = tmp_path / "c.pt"
    torch.save(state, path)
    with pytest.raises(GradleakError, match=f"holds classifier.bias as {kind}"):
        load_checkpoint(_lenet(), path)


def test_float64_weights_load_into_a_float32_model(tmp_path: Path) -> None:
    source = _lenet()
    path = tmp_path / "c.pt"
    torch.save({k: v.double() for k, v in source.state_dict().items()}, path)
    target = load_checkpoint(build_model("lenet", num_classes=10, seed=1), path)
    assert torch.equal(target.classifier.weight, source.classifier.weight)


def test_a_sparse_tensor_is_refused(tmp_path: Path) -> None:
    state = _lenet().state_dict()
    state["classifier.weight"] = state["classifier.weight"].to_sparse()
    path = tmp_path / "c.pt"
    torch.save(state, path)
    with pytest.raises(GradleakError, match="holds classifier.weight as a torch.sparse_coo"):
        load_checkpoint(_lenet(), path)
