"""A defense that overflows says so, naming itself and the bound, not a corrupt client update."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

from gradleak.cli import main
from gradleak.core.batch import PrivateBatch
from gradleak.core.errors import GradleakError
from gradleak.core.update import SharedUpdate
from gradleak.defenses import ClientView, parse_defense
from gradleak.defenses.base import largest_noise_std
from gradleak.fl.fedsgd import FedSGDClient
from gradleak.models import build_model


def _update(scale: float = 1.0, dtype: torch.dtype = torch.float32) -> SharedUpdate:
    g = torch.Generator().manual_seed(0)
    tensors = {
        "w": torch.randn(20, 30, generator=g, dtype=dtype) * scale,
        "b": torch.randn(30, generator=g, dtype=dtype) * scale,
    }
    return SharedUpdate(tensors)


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(1)


def test_huge_noise_is_the_defense_overflowing() -> None:
    with pytest.raises(GradleakError) as info:
        parse_defense("noise:gaussian:1e200").apply(_update(), _gen())
    assert str(info.value) == (
        "defense 'noise:gaussian:1e+200' overflows update tensor 'w': noise of variance "
        "1e+200 does not fit in float32 (largest value 3.4e+38); use a variance of at most "
        "1.16e+71"
    )


@pytest.mark.parametrize("kind", ["gaussian", "laplacian"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_the_largest_variance_named_fits_and_more_is_refused(kind: str, dtype: torch.dtype) -> None:
    largest = largest_noise_std(dtype) ** 2
    update = _update(dtype=dtype)
    shared = parse_defense(f"noise:{kind}:{largest!r}").apply(update, _gen())
    assert all(bool(torch.isfinite(t).all()) for t in shared.tensors.values())
    bound = re.escape(f"use a variance of at most {largest:.3g}")
    with pytest.raises(GradleakError, match=bound):
        parse_defense(f"noise:{kind}:{largest * 1.01!r}").apply(update, _gen())


@pytest.mark.parametrize("kind", ["gaussian", "laplacian"])
def test_every_variance_fits_a_float64_update(kind: str) -> None:
    shared = parse_defense(f"noise:{kind}:1e308").apply(_update(dtype=torch.float64), _gen())
    assert all(bool(torch.isfinite(t).all()) for t in shared.tensors.values())


def test_a_client_update_that_was_already_not_finite_is_left_to_its_own_check() -> None:
    tensors = dict(_update().tensors)
    tensors["w"] = tensors["w"].clone()
    tensors["w"][0, 0] = math.nan
    shared = parse_defense("noise:gaussian:1e-2").apply(SharedUpdate(tensors), _gen())
    assert math.isnan(float(shared.tensors["w"][0, 0]))
    assert bool(torch.isfinite(shared.tensors["b"]).all())


def test_float16_sharing_of_large_values_is_the_defense_overflowing() -> None:
    update = _update(scale=1e5)  # beyond float16's 65504
    with pytest.raises(GradleakError) as info:
        parse_defense("precision:float16").apply(update, _gen())
    message = str(info.value)
    assert message.startswith(
        "defense 'precision:float16' overflows update tensor 'w': its values reach "
    )
    assert message.endswith(
        ", beyond the 65504 float16 holds; share it as precision:int8 (scaled per tensor) instead"
    )
    for kind in ("bfloat16", "int8", "sign"):  # formats that hold these values
        shared = parse_defense(f"precision:{kind}").apply(update, _gen())
        assert all(bool(torch.isfinite(t).all()) for t in shared.tensors.values())


def test_huge_dpsgd_noise_is_the_defense_overflowing() -> None:
    pytest.importorskip("opacus")
    model = build_model("lenet", num_classes=10, image_size=(16, 16), seed=0)
    g = torch.Generator().manual_seed(2)
    batch = PrivateBatch(torch.randn(2, 3, 16, 16, generator=g), torch.tensor([1, 2]))
    update = FedSGDClient(model).compute_update(batch)
    with pytest.raises(GradleakError) as info:
        parse_defense("dpsgd:1:1e300").apply(update, _gen(), ClientView(model, batch))
    name = next(iter(dict(model.named_parameters())))
    assert str(info.value) == (
        f"defense 'dpsgd:1.0:1e+300' overflows update tensor {name!r}: noise of standard "
        "deviation σ·C = 1e+300 does not fit in float32 (largest value 3.4e+38); keep σ·C at "
        "most 3.4e+35"
    )


def test_the_attack_command_names_the_defense_not_a_corrupt_update(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["attack", "--defense", "noise:gaussian:1e200", "--out", str(tmp_path / "run")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("gradleak: error: defense 'noise:gaussian:1e+200' overflows ")
    assert err[0].endswith("use a variance of at most 1.16e+71")
    assert "corrupt" not in err[0]
