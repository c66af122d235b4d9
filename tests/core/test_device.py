"""`--device`: resolving a spelling to a device this machine has, and moving things there."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gradleak.core import device as devices
from gradleak.core.device import (
    ACCELERATORS,
    Accelerator,
    check_device,
    device_spelling,
    module_device,
    module_on,
    resolve_device,
)
from gradleak.core.errors import GradleakError
from gradleak.core.update import SharedUpdate, UpdateKind

HAS_CUDA = torch.cuda.is_available()
HAS_MPS = torch.backends.mps.is_available()


@pytest.fixture
def two_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine, as resolve_device sees it, with two CUDA devices (the current: 1)."""
    monkeypatch.setitem(
        ACCELERATORS, "cuda", Accelerator(lambda: True, lambda: 2, "", indexed=True)
    )
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)


@pytest.fixture
def only_mps(monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine, as resolve_device sees it, with MPS and no CUDA."""
    monkeypatch.setitem(
        ACCELERATORS, "cuda", Accelerator(lambda: False, lambda: 0, "no CUDA", True)
    )
    monkeypatch.setitem(ACCELERATORS, "mps", Accelerator(lambda: True, lambda: 1, "", False))


# --- resolving ----------------------------------------------------------------------------------


@pytest.mark.skipif(HAS_CUDA or HAS_MPS, reason="this machine has an accelerator")
def test_auto_is_the_cpu_without_an_accelerator() -> None:
    assert resolve_device("auto") == torch.device("cpu")
    assert check_device("auto") == "cpu"


@pytest.mark.parametrize("spec", ["cpu", " CPU ", torch.device("cpu")])
def test_cpu_is_always_there(spec: str | torch.device) -> None:
    assert resolve_device(spec) == torch.device("cpu")


def test_auto_prefers_cuda_then_mps(two_gpus: None) -> None:
    assert resolve_device("auto") == torch.device("cuda", 1)


def test_auto_takes_mps_without_cuda(only_mps: None) -> None:
    assert resolve_device("auto") == torch.device("mps")
    assert resolve_device("mps") == torch.device("mps")


def test_cuda_names_its_index(two_gpus: None) -> None:
    # Records name the device used: the current one for plain 'cuda'.
    assert resolve_device("cuda") == torch.device("cuda", 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    assert check_device("cuda:0") == "cuda:0"


def test_a_cuda_index_beyond_the_devices_is_one_line(two_gpus: None) -> None:
    with pytest.raises(GradleakError) as info:
        resolve_device("cuda:2")
    assert str(info.value) == (
        "--device cuda:2: this machine has 2 CUDA device(s) (cuda:0, cuda:1); use one of "
        "them or auto"
    )


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("bogus", "--device 'bogus' is not a device; use auto, cpu, cuda, cuda:N or mps"),
        ("gpu:0", "--device 'gpu:0' is not a device; use auto, cpu, cuda, cuda:N or mps"),
        ("cuda:-1", "--device 'cuda:-1' is not a device; use auto, cpu, cuda, cuda:N or mps"),
        ("", "--device '' is not a device; use auto, cpu, cuda, cuda:N or mps"),
        ("cpu:0", "--device cpu:0: cpu takes no index; use --device cpu"),
        ("mps:1", "--device mps:1: mps takes no index; use --device mps"),
    ],
)
def test_a_bad_spelling_is_one_line(spec: str, message: str) -> None:
    for check in (resolve_device, device_spelling):
        with pytest.raises(GradleakError) as info:
            check(spec)
        assert str(info.value) == message


@pytest.mark.skipif(HAS_CUDA, reason="this machine has CUDA")
@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "CUDA:1"])
def test_cuda_without_cuda_is_one_line(spec: str) -> None:
    with pytest.raises(GradleakError) as info:
        resolve_device(spec)
    assert str(info.value) == (
        f"--device {spec}: this torch has no CUDA (torch.cuda.is_available() is False); "
        "use --device cpu or auto"
    )


@pytest.mark.skipif(HAS_MPS, reason="this machine has MPS")
def test_mps_without_mps_is_one_line() -> None:
    with pytest.raises(GradleakError) as info:
        resolve_device("mps")
    assert str(info.value) == (
        "--device mps: this torch has no MPS (torch.backends.mps.is_available() is False); "
        "use --device cpu or auto"
    )


def test_spelling_alone_accepts_devices_this_machine_lacks() -> None:
    # Ray workers resolve the device where they run.
    assert device_spelling(" CUDA:3 ") == "cuda:3"
    assert device_spelling("mps") == "mps"
    assert device_spelling("auto") == "auto"


def test_device_name_of_the_cpu() -> None:
    assert devices.device_name(torch.device("cpu")) == "cpu"


# --- moving -------------------------------------------------------------------------------------


def test_module_device_is_where_its_parameters_are() -> None:
    linear = nn.Linear(2, 3)
    assert module_device(linear) == torch.device("cpu")
    assert module_device(linear.to("meta")) == torch.device("meta")
    assert module_device(nn.ReLU()) == torch.device("cpu")  # nothing to hold: the CPU


def test_module_on_copies_only_when_it_must() -> None:
    linear = nn.Linear(2, 3)
    assert module_on(linear, torch.device("cpu")) is linear
    moved = module_on(linear, torch.device("meta"))
    assert moved is not linear
    assert module_device(moved) == torch.device("meta")
    assert module_device(linear) == torch.device("cpu")  # the original stays


def test_an_update_moves_whole() -> None:
    update = SharedUpdate(
        {"w": torch.ones(2, 2)}, UpdateKind.WEIGHT_DELTA, {"num_samples": 4}, {"b": torch.ones(2)}
    )
    assert update.to("cpu") is update
    moved = update.to(torch.device("meta"))
    assert moved.tensors["w"].device.type == "meta"
    assert moved.buffers["b"].device.type == "meta"
    assert (moved.kind, dict(moved.metadata)) == (update.kind, dict(update.metadata))
    assert update.tensors["w"].device.type == "cpu"
