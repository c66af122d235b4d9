"""The learned inverter: its sketch, its file and the settings it refuses."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import pytest
import torch

from gradleak.attacks.priors.inverter import (
    InverterNet,
    LearnedInverter,
    UpdateSketch,
    architecture_digest,
    describe_protocol,
    load_inverter,
    save_inverter,
    store_images,
)
from gradleak.core.batch import PrivateBatch
from gradleak.core.errors import GradleakError
from gradleak.core.knowledge import Knowledge
from gradleak.core.update import SharedUpdate, UpdateKind
from gradleak.fl import FedSGDClient
from gradleak.fl.local_training import LocalTraining
from gradleak.models import build_model, save_checkpoint
from gradleak.models.checkpoint import model_fingerprint

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE = (3, 8, 8)
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def _model(seed: int = 0) -> torch.nn.Module:
    return build_model("lenet", num_classes=2, in_channels=3, image_size=SHAPE[1:], seed=seed)


def _inverter(model: torch.nn.Module, batch_size: int = 1) -> LearnedInverter:
    """An untrained inverter for `model` on 8×8 images, FedSGD (random but fixed weights)."""
    sketch = UpdateSketch(64, seed=3)
    torch.manual_seed(0)
    net = InverterNet(sketch.features, batch_size, SHAPE, hidden=32)
    pixels = torch.rand(5, *SHAPE, generator=torch.Generator().manual_seed(1))
    return LearnedInverter(
        net=net,
        sketch=sketch,
        parameter_names=tuple(n for n, _ in model.named_parameters()),
        model="lenet",
        fingerprint=model_fingerprint(model),
        architecture=architecture_digest(model),
        protocol=describe_protocol(UpdateKind.GRADIENT, None, 1, "train"),
        batch_size=batch_size,
        data_shape=SHAPE,
        mean=MEAN,
        std=STD,
        dataset="folder x, images 0-4",
        auxiliary={"dataset": "folder", "range": [0, 4]},
        training_images=store_images(pixels),
        epochs=3,
        training={"losses": [0.5, 0.25, 0.125]},
    )


def _knowledge(batch_size: int = 1, **changes: object) -> Knowledge:
    settings: dict[str, object] = {
        "data_shape": SHAPE,
        "num_classes": 2,
        "batch_size": batch_size,
        "mean": MEAN,
        "std": STD,
    }
    settings.update(changes)
    return Knowledge(**settings)  # type: ignore[arg-type]


def _update(model: torch.nn.Module, batch_size: int = 1, seed: int = 0) -> SharedUpdate:
    images = torch.randn(batch_size, *SHAPE, generator=torch.Generator().manual_seed(seed))
    labels = torch.arange(batch_size) % 2
    return FedSGDClient(model).compute_update(PrivateBatch(images, labels))


# --- the sketch -------------------------------------------------------------------------------


def test_sketch_is_deterministic_and_depends_on_its_seed() -> None:
    flat = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    a, b = UpdateSketch(32, seed=5)(flat), UpdateSketch(32, seed=5)(flat)
    assert a.shape == (33,) and torch.equal(a, b)
    assert not torch.equal(a[:32], UpdateSketch(32, seed=6)(flat)[:32])


def test_sketch_is_linear_up_to_the_norm() -> None:
    sketch = UpdateSketch(32, seed=0)
    u = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    one, two = sketch(u), sketch(2 * u)
    assert torch.equal(one[:32], two[:32])  # scaling by 2 is exact in floating point
    assert two[32] - one[32] == pytest.approx(math.log(2), abs=1e-6)
    assert one[32] == pytest.approx(math.log(float(u.norm())), abs=1e-5)
    # A sum of sketched parts is the sketch of the sum, once both are scaled by their norms.
    v = torch.randn(1000, generator=torch.Generator().manual_seed(1))
    parts = sketch(u)[:32] * u.norm() + sketch(v)[:32] * v.norm()
    assert torch.allclose(parts, sketch(u + v)[:32] * (u + v).norm(), atol=1e-5)


def test_a_stack_of_updates_is_sketched_row_by_row() -> None:
    sketch = UpdateSketch(16, seed=0)
    rows = torch.randn(3, 200, generator=torch.Generator().manual_seed(0))
    stacked = sketch(rows)
    assert stacked.shape == (3, 17)
    for i in range(3):
        assert torch.allclose(stacked[i], sketch(rows[i]))


def test_a_zero_update_has_a_finite_sketch() -> None:
    out = UpdateSketch(8, seed=0)(torch.zeros(50))
    assert torch.isfinite(out).all() and torch.equal(out[:8], torch.zeros(8))


def test_sketch_refuses_an_impossible_size() -> None:
    with pytest.raises(GradleakError, match="sketch dim must be an integer of at least 1"):
        UpdateSketch(0)


# --- the fingerprint --------------------------------------------------------------------------


def test_fingerprint_follows_the_state() -> None:
    a, b = _model(0), _model(0)
    assert model_fingerprint(a) == model_fingerprint(b)
    assert len(model_fingerprint(a)) == 16
    assert model_fingerprint(a) != model_fingerprint(_model(1))
    with torch.no_grad():
        next(b.parameters())[0].view(-1)[0] += 1e-3
    assert model_fingerprint(a) != model_fingerprint(b)
    assert architecture_digest(a) == architecture_digest(b)


# --- invert, save, load ------------------------------------------------------------------------


def test_invert_gives_a_batch_of_images() -> None:
    model = _model()
    inv = _inverter(model, batch_size=2)
    out = inv.invert(_update(model, batch_size=2))
    assert out.shape == (2, *SHAPE) and out.dtype == torch.float32 and not out.requires_grad


def test_save_load_round_trip_inverts_identically(tmp_path: Path) -> None:
    model = _model()
    inv = _inverter(model)
    path = save_inverter(inv, tmp_path / "inv.pt")
    back = load_inverter(path)
    update = _update(model)
    assert torch.equal(inv.invert(update), back.invert(update))
    assert back.path == path and inv.path == path
    same = ("model", "fingerprint", "protocol", "batch_size", "data_shape", "mean", "std")
    for field in (*same, "dataset", "auxiliary"):
        assert getattr(back, field) == getattr(inv, field)
    assert back.epochs == 3 and back.training["losses"] == [0.5, 0.25, 0.125]
    assert torch.equal(back.training_images, inv.training_images)
    assert back.update_kind is UpdateKind.GRADIENT


def test_the_file_is_written_atomically(tmp_path: Path) -> None:
    path = tmp_path / "inv.pt"
    save_inverter(_inverter(_model()), path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inv.pt"]


def _one_line(excinfo: pytest.ExceptionInfo[GradleakError]) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_load_refuses_what_is_no_inverter(tmp_path: Path) -> None:
    with pytest.raises(GradleakError, match="inverter file not found") as missing:
        load_inverter(tmp_path / "missing.pt")
    _one_line(missing)
    with pytest.raises(GradleakError, match="is a folder"):
        load_inverter(tmp_path)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a torch file" * 10)
    with pytest.raises(GradleakError, match="is not a tensors-only torch file") as bad:
        load_inverter(garbage)
    _one_line(bad)
    checkpoint = save_checkpoint(_model(), tmp_path / "model.pt", model="lenet")
    with pytest.raises(GradleakError, match="is a model checkpoint, not a learned inverter") as ck:
        load_inverter(checkpoint)
    assert "--checkpoint" in _one_line(ck)
    other = tmp_path / "other.pt"
    torch.save({"hello": "world"}, other)
    with pytest.raises(GradleakError, match="not an inverter"):
        load_inverter(other)


def test_load_refuses_a_damaged_inverter(tmp_path: Path) -> None:
    path = save_inverter(_inverter(_model()), tmp_path / "inv.pt")
    payload = torch.load(path, weights_only=True)
    payload["state_dict"]["body.0.weight"] = torch.zeros(3, 3)
    torch.save(payload, path)
    with pytest.raises(GradleakError, match="is damaged") as damaged:
        load_inverter(path)
    _one_line(damaged)
    del payload["fingerprint"]
    torch.save(payload, path)
    with pytest.raises(GradleakError, match="lacks 'fingerprint'"):
        load_inverter(path)


# --- the setting it was trained for --------------------------------------------------------


def test_check_fits_accepts_its_own_setting() -> None:
    model = _model()
    _inverter(model).check_fits(model, _knowledge(), _update(model), "attack 'learned'")


@pytest.mark.parametrize(
    ("case", "fragment"),
    [
        ("state", "the server model has another state"),
        ("architecture", "the server model is another architecture"),
        ("batch", "but the batch size is 2"),
        ("shape", "but the images are 3×16×16"),
        ("normalisation", "with normalisation mean [0.5, 0.5, 0.5]"),
        ("kind", "but the update is a weight difference"),
        ("local", "but the clients run fedsgd, 2 users"),
        ("mode", "but the clients run fedsgd, eval mode"),
    ],
)
def test_check_fits_refuses_another_setting(case: str, fragment: str) -> None:
    model = _model()
    inv = _inverter(model)
    update, knowledge, server = _update(model), _knowledge(), model
    if case == "state":
        server = _model(seed=1)
    elif case == "architecture":
        server = build_model("cnn6", num_classes=2, in_channels=3, image_size=(8, 8), seed=0)
    elif case == "batch":
        knowledge = _knowledge(batch_size=2)
    elif case == "shape":
        knowledge = _knowledge(data_shape=(3, 16, 16))
    elif case == "normalisation":
        knowledge = _knowledge(mean=(0.4, 0.5, 0.5))
    elif case == "kind":
        update = SharedUpdate(update.tensors, UpdateKind.WEIGHT_DELTA)
        knowledge = _knowledge(local_training=LocalTraining(lr=0.01))
    elif case == "local":
        knowledge = _knowledge(batch_size=2, num_users=2)
        inv = dataclasses.replace(inv, batch_size=2)
    elif case == "mode":
        knowledge = _knowledge(model_mode="eval")
    with pytest.raises(GradleakError, match=re.escape(fragment)) as refused:
        inv.check_fits(server, knowledge, update, "attack 'learned:inv.pt'")
    message = _one_line(refused)
    assert message.startswith("attack 'learned:inv.pt': the inverter")
    assert "lenet (fingerprint" in message and "gradleak train-inverter --model" in message


def test_protocol_description_names_the_local_training() -> None:
    local = LocalTraining(lr=0.05, steps=3)
    described = describe_protocol(UpdateKind.WEIGHT_DELTA, local, 1, "train")
    assert described == {
        "protocol": "fedavg",
        "update_kind": "weight_delta",
        "local_training": {"lr": 0.05, "steps": 3, "epochs": None, "batch_size": None},
        "users": 1,
        "model_mode": "train",
    }


def test_nearest_training_images_finds_a_stored_image() -> None:
    inv = _inverter(_model())
    stored = inv.training_images.float() / 255
    query = torch.stack([stored[3], stored[1] + 0.001])
    nearest, indices = inv.nearest_training_images(query)
    assert indices.tolist() == [3, 1]
    assert torch.equal(nearest, stored[[3, 1]])
    with pytest.raises(GradleakError, match="cannot be compared"):
        inv.nearest_training_images(torch.zeros(1, 3, 4, 4))


def test_at_most_2000_training_images_are_stored() -> None:
    stored = store_images(torch.rand(2500, 1, 2, 2))
    assert stored.shape == (2000, 1, 2, 2) and stored.dtype == torch.uint8
