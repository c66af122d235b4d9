"""The helpers every defense shares: mapping each tensor of an update, after a type check."""

from __future__ import annotations

import pytest
import torch

from gradleak.core.errors import GradleakError
from gradleak.core.update import SharedUpdate, UpdateKind
from gradleak.defenses.base import map_tensors


def _update(tensors: dict[str, torch.Tensor]) -> SharedUpdate:
    buffers = {"bn.running_mean": torch.tensor([0.5, -0.5])}
    return SharedUpdate(tensors, UpdateKind.WEIGHT_DELTA, {"num_samples": 3}, buffers=buffers)


def test_every_tensor_is_mapped_in_the_update_order() -> None:
    tensors = {"b": torch.tensor([1.0, -2.0]), "a": torch.ones(2, 2), "c": torch.zeros(0)}
    update = _update(tensors)
    seen: list[torch.Tensor] = []

    def double(tensor: torch.Tensor) -> torch.Tensor:
        seen.append(tensor)
        return tensor * 2

    out = map_tensors(update, double)
    assert [t.shape for t in seen] == [(2,), (2, 2), (0,)]
    assert list(out.tensors) == ["b", "a", "c"]
    assert torch.equal(out.tensors["b"], torch.tensor([2.0, -4.0]))
    assert torch.equal(out.tensors["a"], torch.full((2, 2), 2.0))
    assert out.tensors["c"].shape == (0,)
    assert out.kind is UpdateKind.WEIGHT_DELTA
    assert out.metadata == {"num_samples": 3}
    assert torch.equal(out.buffers["bn.running_mean"], torch.tensor([0.5, -0.5]))
    assert torch.equal(update.tensors["b"], torch.tensor([1.0, -2.0]))  # input untouched


def test_draws_follow_the_update_order() -> None:
    update = _update({"w": torch.zeros(3, 4), "v": torch.zeros(5)})

    def noisy(tensor: torch.Tensor) -> torch.Tensor:
        return tensor + torch.randn(tensor.shape, generator=generator)

    generator = torch.Generator().manual_seed(11)
    out = map_tensors(update, noisy)
    expected = torch.Generator().manual_seed(11)
    assert torch.equal(out.tensors["w"], torch.randn(3, 4, generator=expected))
    assert torch.equal(out.tensors["v"], torch.randn(5, generator=expected))


def test_an_integer_tensor_never_reaches_a_defense() -> None:
    # The update refuses it when it is made, so no defense sees one.
    with pytest.raises(GradleakError, match="'counts'.*torch.int64"):
        _update({"w": torch.ones(2), "counts": torch.arange(3)})


def test_an_empty_update_maps_to_an_empty_update() -> None:
    out = map_tensors(_update({}), lambda t: t / 0)
    assert dict(out.tensors) == {}
    assert out.metadata == {"num_samples": 3}
