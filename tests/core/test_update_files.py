"""Update files: safetensors and torch files of named tensors, state pairs, refused input."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from gradleak.core.errors import GradleakError
from gradleak.core.update import SharedUpdate, UpdateKind
from gradleak.core.update_files import (
    BUFFER_PREFIX,
    format_metadata_value,
    load_update_file,
    parse_metadata_value,
    read_state_file,
    save_update_safetensors,
)


class _Net(nn.Module):
    """Parameters and batch-norm buffers (a float running mean, an int64 step counter)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(4, 3)
        self.norm = nn.BatchNorm1d(3)
        self.head = nn.Linear(3, 2, bias=False)


def _random(shape: torch.Size, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def _update(kind: UpdateKind = UpdateKind.WEIGHT_DELTA) -> SharedUpdate:
    tensors = {
        "body.weight": _random(torch.Size([3, 4]), 0),
        "body.bias": _random(torch.Size([3]), 1, torch.float64),
        "head.weight": _random(torch.Size([2, 3]), 2, torch.float16),
        "extra": _random(torch.Size([5]), 3, torch.bfloat16),
        "scalar": torch.tensor(1.5),
    }
    buffers = {"norm.running_mean": _random(torch.Size([3]), 4), "norm.steps": torch.tensor(7)}
    metadata = {
        "num_samples": 8,
        "lr": 0.1,
        "secure": True,
        "client": "c-17",
        "looks_like_a_number": "3",
        "looks_like_a_bool": "false",
        "quoted": '"x"',
        "empty": "",
    }
    return SharedUpdate(tensors, kind, metadata, buffers=buffers)


def _assert_equal(loaded: SharedUpdate, update: SharedUpdate) -> None:
    assert loaded.kind is update.kind
    assert loaded.metadata == update.metadata
    assert {k: type(v) for k, v in loaded.metadata.items()} == {
        k: type(v) for k, v in update.metadata.items()
    }
    for got, want in ((loaded.tensors, update.tensors), (loaded.buffers, update.buffers)):
        assert got.keys() == want.keys()  # safetensors keeps names sorted, not in order
        for name, tensor in want.items():
            assert got[name].dtype == tensor.dtype, name
            assert torch.equal(got[name], tensor), name


def _one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


# --- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(UpdateKind))
def test_safetensors_round_trip_keeps_tensors_buffers_kind_and_metadata(
    tmp_path: Path, kind: UpdateKind
) -> None:
    update = _update(kind)
    path = save_update_safetensors(update, tmp_path / "sub" / "update.safetensors")
    _assert_equal(load_update_file(path), update)


def test_torch_round_trip_of_the_shared_update_payload(tmp_path: Path) -> None:
    update = _update()
    update.save(tmp_path / "update.pt")
    _assert_equal(load_update_file(tmp_path / "update.pt"), update)


def test_a_torch_dict_of_named_tensors_is_the_update_itself(tmp_path: Path) -> None:
    tensors = _update().tensors
    torch.save(dict(tensors), tmp_path / "grads.pt")
    loaded = load_update_file(tmp_path / "grads.pt")
    _assert_equal(loaded, SharedUpdate(tensors, UpdateKind.GRADIENT))
    given = load_update_file(tmp_path / "grads.pt", kind="admm_increment")
    assert given.kind is UpdateKind.ADMM_INCREMENT


def test_a_foreign_safetensors_file_with_text_metadata(tmp_path: Path) -> None:
    tensors = {"w": _random(torch.Size([2, 2]), 0)}
    header = {"format": "pt", "kind": "weight_delta", "num_samples": "32", "round": "4"}
    save_file(tensors, str(tmp_path / "u.safetensors"), metadata=header)
    loaded = load_update_file(tmp_path / "u.safetensors")
    assert loaded.kind is UpdateKind.WEIGHT_DELTA
    assert loaded.metadata == {"num_samples": 32, "round": 4}
    assert loaded.num_samples == 32
    assert torch.equal(loaded.tensors["w"], tensors["w"])
    save_file(tensors, str(tmp_path / "plain.safetensors"))
    assert load_update_file(tmp_path / "plain.safetensors").kind is UpdateKind.GRADIENT


@pytest.mark.parametrize(
    "value", [0, -3, 2**40, 0.1, -2.5e-7, 1.0, math.inf, True, False, "", "a b", "3", "1e3"]
)
def test_metadata_text_reads_back_as_the_value_written(value: object) -> None:
    text = format_metadata_value(value)  # type: ignore[arg-type]
    back = parse_metadata_value(text)
    assert type(back) is type(value)
    assert back == value


def test_nan_metadata_reads_back_as_nan() -> None:
    back = parse_metadata_value(format_metadata_value(math.nan))
    assert isinstance(back, float) and math.isnan(back)


# --- a local state and its base ---------------------------------------------------------------


def _states(tmp_path: Path) -> tuple[_Net, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    net = _Net()
    base = {name: t.clone() for name, t in net.state_dict().items()}
    local = {
        name: (t + _random(t.shape, i) if t.is_floating_point() else t + 3)
        for i, (name, t) in enumerate(base.items())
    }
    torch.save(base, tmp_path / "global.pt")
    torch.save(local, tmp_path / "local.pt")
    return net, base, local


def test_a_pair_of_states_gives_local_minus_global_for_the_parameters(tmp_path: Path) -> None:
    net, base, local = _states(tmp_path)
    parameters = {name for name, _ in net.named_parameters()}
    update = load_update_file(
        tmp_path / "local.pt", base=tmp_path / "global.pt", parameters=parameters
    )
    assert update.kind is UpdateKind.WEIGHT_DELTA
    assert set(update.tensors) == parameters
    for name in parameters:
        assert torch.equal(update.tensors[name], local[name] - base[name])
    # The buffers are the client's after training, not differences.
    assert set(update.buffers) == set(base) - parameters
    for name, tensor in update.buffers.items():
        assert torch.equal(tensor, local[name])
    update.validate_for(net)


def test_without_parameter_names_every_float_entry_is_differenced(tmp_path: Path) -> None:
    _, base, local = _states(tmp_path)
    update = load_update_file(tmp_path / "local.pt", base=tmp_path / "global.pt")
    floats = {name for name, t in base.items() if t.is_floating_point()}
    assert set(update.tensors) == floats
    assert set(update.buffers) == set(base) - floats
    for name in floats:
        assert torch.equal(update.tensors[name], local[name] - base[name])


def test_a_pair_may_be_safetensors_wrapped_or_data_parallel(tmp_path: Path) -> None:
    _, base, local = _states(tmp_path)
    header = {"num_samples": "5", "kind": "admm_increment"}
    save_file(local, str(tmp_path / "local.safetensors"), metadata=header)
    torch.save({"state_dict": {f"module.{k}": v for k, v in base.items()}}, tmp_path / "g.pt")
    update = load_update_file(tmp_path / "local.safetensors", base=tmp_path / "g.pt")
    assert (update.num_samples, update.kind) == (5, UpdateKind.ADMM_INCREMENT)
    assert torch.equal(update.tensors["body.weight"], local["body.weight"] - base["body.weight"])
    assert read_state_file(tmp_path / "g.pt").keys() == base.keys()


def test_a_pair_may_be_read_as_an_admm_increment_but_never_as_a_gradient(tmp_path: Path) -> None:
    _states(tmp_path)
    pair = {"base": tmp_path / "global.pt"}
    assert load_update_file(tmp_path / "local.pt", kind="admm_increment", **pair).kind is (
        UpdateKind.ADMM_INCREMENT
    )
    with pytest.raises(GradleakError, match="weight difference, not a gradient") as exc:
        load_update_file(tmp_path / "local.pt", kind="gradient", **pair)
    _one_line(exc)


# --- refused input ---------------------------------------------------------------------------


class _Touch:
    """Pickles to a call that creates a marker file when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (Path.touch, (self.marker,))


def test_a_pickled_object_is_refused_and_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(2), "payload": _Touch(marker)}, path)
    pickle.loads(pickle.dumps(_Touch(tmp_path / "works")))  # the payload does run when unpickled
    assert (tmp_path / "works").exists()
    for load in (lambda: load_update_file(path), lambda: load_update_file(path, base=path)):
        with pytest.raises(GradleakError, match="not a tensors-only torch file") as exc:
            load()
        _one_line(exc)
    assert not marker.exists()


def _truncated(tmp_path: Path) -> Path:
    path = save_update_safetensors(_update(), tmp_path / "full.safetensors")
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(path.read_bytes()[:-7])
    return cut


def _write(tmp_path: Path, name: str, payload: object) -> Path:
    torch.save(payload, tmp_path / name)
    return tmp_path / name


BAD_FILES = {
    "missing": (lambda p: p / "absent.safetensors", "update file not found"),
    "folder": (lambda p: p, "is a folder"),
    "truncated": (_truncated, "not a readable safetensors file"),
    "not a dict": (lambda p: _write(p, "l.pt", [torch.zeros(2)]), "holds a list"),
    "non-tensor value": (lambda p: _write(p, "n.pt", {"w": 3}), "'w' is a int, not a tensor"),
    "integer tensor": (
        lambda p: _write(p, "i.pt", {"w": torch.arange(3)}),
        "'w' has dtype torch.int64",
    ),
    "integer safetensors": (
        lambda p: (
            save_file({"w": torch.arange(3)}, str(p / "i.safetensors")) or p / "i.safetensors"
        ),
        "'w' has dtype torch.int64",
    ),
    "unknown kind": (
        lambda p: (
            save_file({"w": torch.zeros(1)}, str(p / "k.safetensors"), {"kind": "x"})
            or p / "k.safetensors"
        ),
        "kind 'x' is not an update kind",
    ),
    "garbage": (lambda p: (p / "g.pt").write_bytes(b"\x00" * 64) and p / "g.pt", "tensors-only"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_file_is_one_line(tmp_path: Path, case: str) -> None:
    make, expected = BAD_FILES[case]
    with pytest.raises(GradleakError, match=expected) as exc:
        load_update_file(make(tmp_path))
    _one_line(exc)


def test_a_kind_given_against_the_files_own_is_refused(tmp_path: Path) -> None:
    path = save_update_safetensors(_update(UpdateKind.GRADIENT), tmp_path / "u.safetensors")
    assert load_update_file(path, kind="gradient").kind is UpdateKind.GRADIENT
    with pytest.raises(GradleakError, match="says its kind is gradient but --update-kind") as exc:
        load_update_file(path, kind="weight_delta")
    _one_line(exc)


def test_a_base_of_other_names_or_shapes_is_refused(tmp_path: Path) -> None:
    _, base, local = _states(tmp_path)
    renamed = {("other" if n == "body.bias" else n): t for n, t in base.items()}
    torch.save(renamed, tmp_path / "renamed.pt")
    with pytest.raises(
        GradleakError, match="the base lacks 'body.bias'.*only the base has 'other'"
    ) as exc:
        load_update_file(tmp_path / "local.pt", base=tmp_path / "renamed.pt")
    _one_line(exc)
    reshaped = {**base, "body.bias": torch.zeros(4)}
    torch.save(reshaped, tmp_path / "reshaped.pt")
    with pytest.raises(GradleakError, match="'body.bias' has shape \\(3,\\) but the base") as exc:
        load_update_file(tmp_path / "local.pt", base=tmp_path / "reshaped.pt")
    _one_line(exc)
    torch.save({**base, "body.bias": 1.0}, tmp_path / "valued.pt")
    with pytest.raises(GradleakError, match="'body.bias' is a float, not a tensor") as exc:
        load_update_file(tmp_path / "local.pt", base=tmp_path / "valued.pt")
    _one_line(exc)


def test_saving_refuses_the_files_own_keys_and_prefix(tmp_path: Path) -> None:
    reserved = SharedUpdate({"w": torch.zeros(1)}, metadata={"kind": "mine"})
    with pytest.raises(GradleakError, match="'kind' is a key the file keeps"):
        save_update_safetensors(reserved, tmp_path / "r.safetensors")
    clash = SharedUpdate({BUFFER_PREFIX + "w": torch.zeros(1)})
    with pytest.raises(GradleakError, match="names buffers"):
        save_update_safetensors(clash, tmp_path / "c.safetensors")
    assert not list(tmp_path.iterdir())
