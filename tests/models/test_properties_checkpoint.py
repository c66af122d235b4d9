"""Property tests: any file given as a checkpoint loads or fails with one GradleakError."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from gradleak.core.errors import GradleakError
from gradleak.models import check_checkpoint_model, load_checkpoint, read_checkpoint_metadata

SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


class _Small(nn.Module):
    """A Linear and a batch norm: float parameters, float statistics and an int64 counter."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)
        self.bn = nn.BatchNorm1d(2)


TEMPLATE = _Small().state_dict()
DTYPES = [torch.float32, torch.float64, torch.float16, torch.int64, torch.int32, torch.bool]
DTYPES += [torch.complex64, torch.uint8]
FILLS = st.sampled_from([0.0, 1.0, -3.0, float("nan"), float("inf")])


@st.composite
def tensors(draw: st.DrawFn, shape: tuple[int, ...] | None = None) -> torch.Tensor:
    if shape is None or draw(st.integers(0, 4)) == 0:  # now and then, a wrong shape
        shape = tuple(draw(st.lists(st.integers(min_value=0, max_value=3), max_size=3)))
    dtype = draw(st.sampled_from(DTYPES))
    values = torch.full(shape, draw(FILLS), dtype=torch.float64)
    if not (dtype.is_floating_point or dtype.is_complex):
        values = values.nan_to_num(0.0, 0.0, 0.0)
    tensor = values.to(dtype)
    if draw(st.integers(0, 9)) == 0 and tensor.dim() == 2 and dtype == torch.float32:
        tensor = tensor.to_sparse()
    return tensor


@st.composite
def state_dicts(draw: st.DrawFn) -> dict[str, Any]:
    """The template's keys (some dropped, some added), each a tensor of some dtype and shape."""
    state: dict[str, Any] = {}
    for name, tensor in TEMPLATE.items():
        if draw(st.integers(0, 9)) > 0:
            state[name] = draw(tensors(tuple(tensor.shape)))
    state.update(draw(st.dictionaries(st.text(max_size=6), tensors(), max_size=2)))
    if draw(st.integers(0, 9)) == 0:
        state[draw(st.text(max_size=6))] = draw(SCALARS)
    return state


SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10)
VALUES = st.recursive(
    SCALARS | tensors(),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
PAYLOADS = (
    state_dicts()
    | st.fixed_dictionaries(
        {"state_dict": state_dicts() | VALUES},
        optional={"metadata": st.dictionaries(st.text(max_size=6), VALUES, max_size=3) | VALUES},
    )
    | st.fixed_dictionaries({"model": state_dicts()})
    | st.builds(lambda s: {f"module.{k}": v for k, v in s.items()}, state_dicts())
    | VALUES
)
MODEL_NAMES = st.sampled_from(["lenet", "mlp", "mlp2-1024", "resnet20", "x:y"]) | st.text(
    max_size=8
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("checkpoints")


def _one_error(call: Any) -> object:
    try:
        return call()
    except GradleakError as exc:
        assert "\n" not in str(exc), str(exc)
        return exc


def _write(folder: Path, payload: Any) -> Path:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    path = folder / "checkpoint.pt"
    path.write_bytes(buffer.getvalue())
    return path


@SETTINGS
@given(data=st.binary(max_size=300))
def test_any_bytes_load_or_fail_in_one_line(folder: Path, data: bytes) -> None:
    path = folder / "checkpoint.pt"
    path.write_bytes(data)
    _one_error(lambda: load_checkpoint(_Small(), path))
    _one_error(lambda: read_checkpoint_metadata(path))


@SETTINGS
@given(payload=PAYLOADS, name=MODEL_NAMES)
def test_any_saved_payload_loads_or_fails_in_one_line(
    folder: Path, payload: Any, name: str
) -> None:
    path = _write(folder, payload)
    metadata = _one_error(lambda: read_checkpoint_metadata(path))
    assert isinstance(metadata, dict | GradleakError)
    _one_error(lambda: check_checkpoint_model(path, name))
    model = _Small()
    loaded = _one_error(lambda: load_checkpoint(model, path))
    if loaded is model:
        # What loads is finite and in the model's own dtypes.
        for key, tensor in model.state_dict().items():
            assert tensor.dtype == TEMPLATE[key].dtype
            if tensor.is_floating_point():
                assert bool(torch.isfinite(tensor).all())
