"""SharedUpdate: named tensors, kind and metadata; disk round trip; validation against a model."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from gradleak.core import SharedUpdate, UpdateKind
from gradleak.core.errors import GradleakError


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(4, 3)
        self.head = nn.Linear(3, 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.sigmoid(self.body(x)))


def _update_for(model: nn.Module, seed: int = 0) -> SharedUpdate:
    g = torch.Generator().manual_seed(seed)
    tensors = {name: torch.randn(p.shape, generator=g) for name, p in model.named_parameters()}
    return SharedUpdate(tensors, UpdateKind.GRADIENT, {"num_samples": 4, "protocol": "fedsgd"})


def _one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_save_load_round_trip_keeps_tensors_kind_and_metadata(tmp_path: Path) -> None:
    model = _Tiny()
    metadata = {"num_samples": 4, "protocol": "fedsgd", "lr": 0.5, "secure": False}
    update = SharedUpdate(_update_for(model).tensors, UpdateKind.WEIGHT_DELTA, metadata)
    path = tmp_path / "nested" / "update.pt"

    update.save(path)
    loaded = SharedUpdate.load(path)

    assert loaded.kind is UpdateKind.WEIGHT_DELTA
    assert loaded.metadata == metadata
    assert loaded.num_samples == 4
    assert list(loaded.tensors) == list(update.tensors)
    for name, tensor in update.tensors.items():
        assert torch.equal(loaded.tensors[name], tensor)
        assert loaded.tensors[name].dtype == tensor.dtype


def test_saved_file_is_tensors_only(tmp_path: Path) -> None:
    update = _update_for(_Tiny())
    path = tmp_path / "update.pt"
    update.save(path)

    # weights_only refuses arbitrary pickled objects: the file holds tensors and primitives.
    payload = torch.load(path, map_location="cpu", weights_only=True)

    assert payload["kind"] == "gradient"
    assert payload["metadata"] == {"num_samples": 4, "protocol": "fedsgd"}
    assert set(payload["tensors"]) == set(update.tensors)
    for name, tensor in update.tensors.items():
        assert torch.equal(payload["tensors"][name], tensor)


def test_kind_string_is_parsed_and_unknown_kind_rejected() -> None:
    update = SharedUpdate({"w": torch.ones(2)}, "admm_increment")  # type: ignore[arg-type]
    assert update.kind is UpdateKind.ADMM_INCREMENT
    assert update.num_samples is None
    with pytest.raises((ValueError, GradleakError)):
        SharedUpdate({"w": torch.ones(2)}, "gradients")  # type: ignore[arg-type]


def test_load_of_unknown_kind_is_a_gradleak_error(tmp_path: Path) -> None:
    path = tmp_path / "update.pt"
    torch.save({"tensors": {"w": torch.ones(2)}, "kind": "gossip"}, path)
    with pytest.raises(GradleakError, match="unknown update kind 'gossip'") as exc:
        SharedUpdate.load(path)
    _one_line(exc)


def test_update_holds_detached_copies() -> None:
    source = torch.ones(3, requires_grad=True)
    derived = source * 2  # part of a graph
    plain = torch.zeros(2)
    update = SharedUpdate({"a": derived, "b": plain})

    with torch.no_grad():
        derived.add_(5.0)
    plain.fill_(7.0)

    assert torch.equal(update.tensors["a"], torch.full((3,), 2.0))
    assert torch.equal(update.tensors["b"], torch.zeros(2))
    assert not update.tensors["a"].requires_grad
    assert update.tensors["a"].grad_fn is None
    assert update.tensors["b"].data_ptr() != plain.data_ptr()


def test_metadata_is_copied() -> None:
    metadata = {"num_samples": 1}
    update = SharedUpdate({"w": torch.ones(1)}, metadata=metadata)
    metadata["num_samples"] = 99
    assert update.num_samples == 1


def test_validate_for_accepts_matching_update() -> None:
    model = _Tiny()
    _update_for(model).validate_for(model)  # no error


def test_validate_for_missing_name() -> None:
    model = _Tiny()
    tensors = dict(_update_for(model).tensors)
    del tensors["head.weight"]
    with pytest.raises(GradleakError, match="missing 'head.weight'") as exc:
        SharedUpdate(tensors).validate_for(model)
    _one_line(exc)


def test_validate_for_extra_name() -> None:
    model = _Tiny()
    tensors = {**_update_for(model).tensors, "head.bias": torch.zeros(2)}
    with pytest.raises(GradleakError, match="unexpected 'head.bias'") as exc:
        SharedUpdate(tensors).validate_for(model)
    _one_line(exc)


def test_validate_for_positional_names_are_rejected() -> None:
    model = _Tiny()
    positional = {str(i): t for i, t in enumerate(_update_for(model).tensors.values())}
    with pytest.raises(GradleakError, match="missing"):
        SharedUpdate(positional).validate_for(model)


def test_validate_for_wrong_shape() -> None:
    model = _Tiny()
    tensors = {**_update_for(model).tensors, "body.weight": torch.zeros(4, 3)}
    with pytest.raises(GradleakError, match=r"'body.weight' has shape \(4, 3\)") as exc:
        SharedUpdate(tensors).validate_for(model)
    assert "(3, 4)" in _one_line(exc)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_validate_for_non_finite(bad: float) -> None:
    model = _Tiny()
    tensors = dict(_update_for(model).tensors)
    poisoned = tensors["body.bias"].clone()
    poisoned[1] = bad
    tensors["body.bias"] = poisoned
    with pytest.raises(GradleakError, match="'body.bias' contains NaN or Inf") as exc:
        SharedUpdate(tensors).validate_for(model)
    _one_line(exc)


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(GradleakError, match="not found") as exc:
        SharedUpdate.load(tmp_path / "absent.pt")
    assert str(tmp_path / "absent.pt") in _one_line(exc)


def test_load_garbage_file(tmp_path: Path) -> None:
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"this is not a torch file")
    with pytest.raises(GradleakError, match="not a tensors-only update file") as exc:
        SharedUpdate.load(path)
    _one_line(exc)


@pytest.mark.parametrize(
    "payload", [torch.ones(3), [torch.ones(2)], {"weights": {"w": torch.ones(2)}}]
)
def test_load_non_update_payload(tmp_path: Path, payload: object) -> None:
    path = tmp_path / "other.pt"
    torch.save(payload, path)
    with pytest.raises(GradleakError, match="holds no 'tensors' mapping") as exc:
        SharedUpdate.load(path)
    _one_line(exc)


def test_load_refuses_pickled_objects(tmp_path: Path) -> None:
    # A full pickled module is not tensors-only: weights_only loading must refuse it.
    path = tmp_path / "module.pt"
    torch.save({"tensors": {}, "model": _Tiny()}, path)
    with pytest.raises(GradleakError, match="not a tensors-only update file"):
        SharedUpdate.load(path)


@pytest.mark.parametrize(
    "payload",
    [
        {"tensors": [torch.ones(2)]},
        {"tensors": {"w": 1}},
        {"tensors": {"w": torch.ones(2)}, "metadata": [1, 2]},
    ],
    ids=["tensors-list", "tensors-int", "metadata-list"],
)
def test_load_malformed_update_payload(tmp_path: Path, payload: object) -> None:
    path = tmp_path / "malformed.pt"
    torch.save(payload, path)
    with pytest.raises(GradleakError):
        SharedUpdate.load(path)
