"""A SharedUpdate is checked when it is made: dtypes, layouts, names, kind and metadata."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gradleak.core import SharedUpdate
from gradleak.core.errors import GradleakError
from gradleak.core.update import UPDATE_DTYPES


@pytest.mark.parametrize(
    "dtype",
    [torch.int64, torch.int32, torch.uint8, torch.bool, torch.complex64, torch.complex128],
)
def test_non_floating_tensors_are_refused_naming_the_parameter_and_dtype(
    dtype: torch.dtype,
) -> None:
    with pytest.raises(GradleakError) as err:
        SharedUpdate({"w": torch.ones(2), "layer.bias": torch.zeros(3, dtype=dtype)})
    message = str(err.value)
    assert message.startswith(f"update tensor 'layer.bias' has dtype {dtype};")
    assert "\n" not in message


@pytest.mark.parametrize("dtype", UPDATE_DTYPES)
def test_floating_dtypes_are_kept(dtype: torch.dtype) -> None:
    update = SharedUpdate({"w": torch.ones(2, dtype=dtype)})
    assert update.tensors["w"].dtype == dtype


@pytest.mark.parametrize(
    "dtype", [torch.int64, torch.bool, torch.complex64, torch.float32], ids=str
)
def test_load_refuses_non_floating_tensors_naming_the_file(
    tmp_path: Path, dtype: torch.dtype
) -> None:
    path = tmp_path / "update.pt"
    torch.save({"tensors": {"w": torch.ones(2, dtype=dtype)}, "kind": "gradient"}, path)
    if dtype == torch.float32:
        assert SharedUpdate.load(path).tensors["w"].dtype == dtype
        return
    with pytest.raises(GradleakError) as err:
        SharedUpdate.load(path)
    assert str(err.value) == (
        f"{path}: update tensor 'w' has dtype {dtype}; an update holds float16, bfloat16, "
        "float32 or float64 tensors; cast it with .float()"
    )


def test_integer_buffers_are_kept_complex_ones_refused() -> None:
    update = SharedUpdate(
        {"w": torch.ones(1)},
        buffers={"bn.running_mean": torch.zeros(2), "bn.num_batches_tracked": torch.tensor(3)},
    )
    assert update.buffers["bn.num_batches_tracked"].dtype == torch.int64
    with pytest.raises(GradleakError, match="update buffer 'bn.running_var' has dtype"):
        SharedUpdate({"w": torch.ones(1)}, buffers={"bn.running_var": torch.ones(2) * 1j})


def test_a_sparse_tensor_is_refused() -> None:
    with pytest.raises(GradleakError, match="update tensor 'w' is a torch.sparse_coo tensor"):
        SharedUpdate({"w": torch.eye(3).to_sparse()})


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (({1: torch.ones(1)},), "update tensor name 1 is not a string"),
        (({"w": [1.0]},), "update tensor 'w' is a list, not a tensor"),
        (([torch.ones(1)],), "update tensors must map names to tensors, not list"),
        (({"w": torch.ones(1)}, ["gradient"]), "unknown update kind"),
        (({"w": torch.ones(1)}, "gradient", {"lr": [0.1]}), "update metadata 'lr'"),
        (({"w": torch.ones(1)}, "gradient", {"num_samples": -1}), "num_samples must be a count"),
        (({"w": torch.ones(1)}, "gradient", {"num_samples": True}), "num_samples must be a count"),
    ],
)
def test_malformed_updates_are_one_line_errors(arguments: tuple, message: str) -> None:
    with pytest.raises(GradleakError, match=message):
        SharedUpdate(*arguments)


def test_a_folder_given_as_an_update_file(tmp_path: Path) -> None:
    with pytest.raises(GradleakError, match="is a folder; pass the file of one update"):
        SharedUpdate.load(tmp_path)
