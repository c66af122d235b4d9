"""Low-precision sharing against ground truth: rounding, quantisation grid and error bounds."""

from __future__ import annotations

import pytest
import torch

from gradleak.core.errors import GradleakError
from gradleak.core.update import SharedUpdate, UpdateKind
from gradleak.defenses.precision import LowPrecision, PrecisionKind, parse

GEN = torch.Generator().manual_seed(0)  # low precision draws nothing; the interface takes one

# Unit roundoff (half an ulp, relative) of each format's normal range.
HALF_ULP = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}
FLOAT_KINDS = {PrecisionKind.FLOAT16: torch.float16, PrecisionKind.BFLOAT16: torch.bfloat16}


def _apply(kind: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return dict(parse([kind]).apply(SharedUpdate(tensors), GEN).tensors)


def _within_half_a_step(q: torch.Tensor, x: torch.Tensor, scale: float) -> bool:
    """|q - x| <= scale / 2 entrywise, up to the output's own float32 rounding (half an ulp)."""
    error = (q.double() - x.double()).abs()
    return bool((error <= scale / 2 + 2.0**-24 * x.double().abs()).all())


def _log_uniform(n: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Random signs and magnitudes spread over 1e-3 .. 1e3, all in float16's normal range."""
    g = torch.Generator().manual_seed(seed)
    exponent = torch.rand(n, generator=g, dtype=torch.float64) * 6 - 3
    signs = torch.randint(0, 2, (n,), generator=g) * 2 - 1
    return (signs * 10.0**exponent).to(dtype)


# --- float16 / bfloat16 -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(FLOAT_KINDS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_float_kinds_round_to_the_format_and_back(kind: PrecisionKind, dtype: torch.dtype) -> None:
    coarse = FLOAT_KINDS[kind]
    x = _log_uniform(5000, seed=1, dtype=dtype).reshape(50, 100)
    out = _apply(kind.value, {"w": x})["w"]

    assert out.dtype == dtype and out.shape == x.shape
    assert torch.equal(out, x.to(coarse).to(dtype))
    assert (out != x).float().mean().item() > 0.9  # generic values are not representable
    relative = ((out.double() - x.double()).abs() / x.double().abs()).max().item()
    assert 0 < relative <= HALF_ULP[coarse]


def test_float16_keeps_values_it_can_represent() -> None:
    x = torch.tensor([0.5, -1.0, 3.0, 1024.0, 0.0, -(2.0**-14)])
    assert torch.equal(_apply("float16", {"w": x})["w"], x)


# --- int8 -------------------------------------------------------------------------------------


def test_int8_moves_every_entry_by_at_most_half_a_step(update: SharedUpdate) -> None:
    out = LowPrecision(PrecisionKind.INT8).apply(update, GEN)
    for name, x in update.tensors.items():
        q = out.tensors[name]
        assert q.dtype == x.dtype and q.shape == x.shape
        scale = x.double().abs().max().item() / 127
        assert _within_half_a_step(q, x, scale)
        assert not torch.equal(q, x)  # generic values are not on the grid
        steps = q.double() / scale
        assert torch.allclose(steps, steps.round(), rtol=0, atol=1e-4)  # q · scale
        assert steps.abs().max().round().item() == 127  # the largest entry is the end point
        assert torch.unique(q).numel() <= 255


def test_int8_uses_the_whole_grid_and_no_more() -> None:
    x = torch.linspace(-1.0, 1.0, 100_001)
    q = _apply("int8", {"w": x})["w"]
    assert torch.unique(q).numel() == 255


@pytest.mark.parametrize("scale", [2.0**-7, 3 * 2.0**-10, 5.0])
def test_int8_is_exact_on_multiples_of_the_scale(scale: float) -> None:
    g = torch.Generator().manual_seed(4)
    steps = torch.randint(-127, 128, (1000,), generator=g).double()
    steps[0] = 127  # max|x| = 127 · scale, so the scale is `scale`
    x = (steps * scale).float()
    assert torch.equal(_apply("int8", {"w": x})["w"], x)


def test_int8_scales_each_tensor_separately() -> None:
    small, large = torch.tensor([0.01, -0.005, 0.0033]), torch.tensor([100.0, -37.0, 1.0])
    out = _apply("int8", {"small": small, "large": large})
    assert _within_half_a_step(out["small"], small, 0.01 / 127)
    assert _within_half_a_step(out["large"], large, 100 / 127)
    assert not _within_half_a_step(out["large"], large, 0.01 / 127)


# --- sign -------------------------------------------------------------------------------------


def test_sign_keeps_signs_and_the_mean_magnitude() -> None:
    x = torch.tensor([[0.5, -2.0, 0.0, 1.5], [-0.25, 0.0, 4.0, -0.75]])
    mean = x.abs().mean().item()  # 9 / 8
    out = _apply("sign", {"w": x})["w"]
    assert torch.equal(out, torch.sign(x) * mean)
    assert set(out.flatten().tolist()) == {mean, -mean, 0.0}


def test_sign_on_random_tensors(update: SharedUpdate) -> None:
    out = LowPrecision(PrecisionKind.SIGN).apply(update, GEN)
    for name, x in update.tensors.items():
        s = out.tensors[name]
        mean = x.double().abs().mean().float()
        assert torch.equal(torch.sign(s), torch.sign(x))
        assert torch.equal(s.abs(), torch.full_like(x, mean.item()))


# --- every kind -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(PrecisionKind))
def test_zero_and_empty_tensors_stay_as_they_are(kind: PrecisionKind) -> None:
    out = _apply(kind.value, {"zero": torch.zeros(3, 4), "empty": torch.zeros(0, 5)})
    assert torch.equal(out["zero"], torch.zeros(3, 4))
    assert out["empty"].shape == (0, 5)


@pytest.mark.parametrize("kind", list(PrecisionKind))
def test_input_untouched_kind_and_metadata_kept(kind: PrecisionKind, update: SharedUpdate) -> None:
    before = {name: t.clone() for name, t in update.tensors.items()}
    out = LowPrecision(kind).apply(update, GEN)
    for name, t in update.tensors.items():
        assert torch.equal(t, before[name])
        assert not torch.equal(out.tensors[name], t)
    assert out.kind is UpdateKind.WEIGHT_DELTA
    assert out.metadata == {"num_samples": 8, "lr": 0.1}
    assert list(out.tensors) == list(update.tensors)


@pytest.mark.parametrize("kind", list(PrecisionKind))
def test_spec_round_trips(kind: PrecisionKind) -> None:
    defense = parse([f" {kind.value.upper()} "])
    assert defense == LowPrecision(kind)
    assert defense.spec == f"precision:{kind.value}"
    assert parse(defense.spec.split(":")[1:]) == defense


USAGE = "precision:KIND with KIND one of float16, bfloat16, int8, sign (e.g. precision:int8)"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["fp8"], "unknown precision kind 'fp8'; choose one of: float16, bfloat16, int8, sign"),
        ([""], "unknown precision kind ''; choose one of: float16, bfloat16, int8, sign"),
        ([], f"defense 'precision' takes 1 argument(s), got 0 in 'precision'; spell it {USAGE}"),
        (
            ["int8", "4"],
            f"defense 'precision' takes 1 argument(s), got 2 in 'precision:int8:4'; "
            f"spell it {USAGE}",
        ),
    ],
)
def test_bad_spellings_give_one_line_errors(args: list[str], message: str) -> None:
    with pytest.raises(GradleakError) as info:
        parse(args)
    assert str(info.value) == message
    assert "\n" not in message
