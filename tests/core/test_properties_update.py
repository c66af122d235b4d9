"""Property tests: any file given as an update loads or fails with one GradleakError."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gradleak.core import SharedUpdate, UpdateKind
from gradleak.core.errors import GradleakError
from gradleak.core.update import UPDATE_DTYPES

SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
DTYPES = [
    *UPDATE_DTYPES,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.uint8,
    torch.bool,
    torch.complex64,
    torch.complex128,
]
FILLS = st.sampled_from([0.0, 1.0, -2.5, 1e30, float("nan"), float("inf"), float("-inf")])


@st.composite
def tensors(draw: st.DrawFn) -> torch.Tensor:
    shape = draw(st.lists(st.integers(min_value=0, max_value=4), max_size=4))
    dtype = draw(st.sampled_from(DTYPES))
    values = torch.full(shape, draw(FILLS), dtype=torch.float64)
    if draw(st.booleans()):
        values = values + torch.arange(values.numel(), dtype=torch.float64).reshape(shape)
    if dtype.is_floating_point or dtype.is_complex:
        tensor = values.to(dtype)
    else:
        tensor = values.nan_to_num(0.0, 0.0, 0.0).clamp(-100, 100).to(dtype)
    if draw(st.booleans()) and tensor.dim() == 2 and dtype in UPDATE_DTYPES:
        tensor = tensor.to_sparse()
    return tensor


SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10)
LEAVES = SCALARS | tensors()
VALUES = st.recursive(
    LEAVES,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
NAMED_TENSORS = st.dictionaries(st.text(max_size=8) | st.integers(), tensors(), max_size=4)
KINDS = st.sampled_from([k.value for k in UpdateKind]) | SCALARS
PAYLOADS = (
    st.fixed_dictionaries(
        {"tensors": NAMED_TENSORS | VALUES},
        optional={
            "kind": KINDS,
            "metadata": st.dictionaries(st.text(max_size=8), SCALARS, max_size=3) | VALUES,
            "buffers": NAMED_TENSORS | VALUES,
            "format": st.text(max_size=10),
        },
    )
    | VALUES
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("updates")


def _load(path: Path) -> SharedUpdate | GradleakError:
    try:
        update = SharedUpdate.load(path)
    except GradleakError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc), str(exc)
        return exc
    # What loads is usable: floating dense tensors, a kind, plain metadata.
    assert all(t.dtype in UPDATE_DTYPES for t in update.tensors.values())
    assert all(t.layout == torch.strided for t in update.tensors.values())
    assert isinstance(update.kind, UpdateKind)
    assert update.num_samples is None or update.num_samples >= 0
    return update


@SETTINGS
@given(data=st.binary(max_size=300))
def test_any_bytes_load_or_fail_in_one_line(folder: Path, data: bytes) -> None:
    path = folder / "update.pt"
    path.write_bytes(data)
    _load(path)


@SETTINGS
@given(payload=PAYLOADS)
def test_any_saved_payload_loads_or_fails_in_one_line(folder: Path, payload: Any) -> None:
    path = folder / "update.pt"
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    path.write_bytes(buffer.getvalue())
    _load(path)


@SETTINGS
@given(named=NAMED_TENSORS, kind=KINDS)
def test_a_made_update_is_checked_like_a_loaded_one(
    named: dict[Any, torch.Tensor], kind: Any
) -> None:
    try:
        update = SharedUpdate(named, kind)
    except GradleakError as exc:
        assert "\n" not in str(exc)
        return
    assert list(update.tensors) == list(named)
    for name, tensor in named.items():
        assert torch.equal(update.tensors[name], tensor) or bool(tensor.isnan().any())


@SETTINGS
@given(named=NAMED_TENSORS)
def test_a_saved_update_loads_back_equal(folder: Path, named: dict[Any, torch.Tensor]) -> None:
    try:
        update = SharedUpdate(named)
    except GradleakError:
        return
    path = folder / "round-trip.pt"
    update.save(path)
    loaded = SharedUpdate.load(path)
    assert list(loaded.tensors) == list(update.tensors)
    for name, tensor in update.tensors.items():
        assert torch.equal(loaded.tensors[name].nan_to_num(), tensor.nan_to_num())
