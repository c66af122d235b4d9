"""Training a learned inverter: the loss falls, the file carries its setting, Ctrl-C, refusals."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

import gradleak.training.inverter as training
from gradleak.attacks.priors.inverter import load_inverter
from gradleak.core.errors import GradleakError
from gradleak.models import build_model, save_checkpoint
from gradleak.models.checkpoint import model_fingerprint
from gradleak.training.inverter import InverterTrainConfig, augment, matched_mse, train_inverter

pytestmark = pytest.mark.usefixtures("one_thread")


def _config(root: Path, **changes: object) -> InverterTrainConfig:
    """Lenet on the 8 noise images of `image_folder` at 8×8: a training of a second or so."""
    settings: dict[str, object] = {
        "model": "lenet",
        "dataset": "folder",
        "data_root": root,
        "image_size": 8,
        "range": (0, 7),
        "sketch_dim": 128,
        "hidden": 64,
        "updates": 32,
        "epochs": 8,
        "lr": 3e-3,
        "train_batch": 16,
    }
    settings.update(changes)
    return InverterTrainConfig(**settings)  # type: ignore[arg-type]


def test_training_reduces_the_loss_and_records_its_setting(
    image_folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "inv.pt"
    seen: list[tuple[int, float]] = []
    result = train_inverter(
        _config(image_folder),
        out,
        progress=False,
        on_epoch=lambda epoch, loss: seen.append((epoch, loss)),
    )
    assert not result.interrupted and result.updates == 32
    assert len(result.losses) == 8 and [e for e, _ in seen] == list(range(1, 9))
    assert result.first_loss is not None and result.losses[-1] < 0.5 * result.first_loss
    inv = load_inverter(out)
    server = build_model("lenet", num_classes=2, in_channels=3, image_size=(8, 8), seed=0)
    assert inv.fingerprint == model_fingerprint(server)
    assert inv.model == "lenet" and inv.batch_size == 1 and inv.data_shape == (3, 8, 8)
    assert inv.protocol["protocol"] == "fedsgd" and inv.protocol["update_kind"] == "gradient"
    assert inv.auxiliary["range"] == [0, 7] and inv.training_images.shape == (8, 3, 8, 8)
    assert inv.dataset.endswith("images 0-7")
    assert inv.epochs == 8 and inv.training["losses"] == pytest.approx(result.losses)
    assert result.inverter is not None
    assert torch.equal(result.inverter.net.body[0].weight, inv.net.body[0].weight)


def test_same_seed_same_inverter(image_folder: Path, tmp_path: Path) -> None:
    config = _config(image_folder, epochs=2, updates=16)
    a = train_inverter(config, tmp_path / "a.pt", progress=False)
    b = train_inverter(config, tmp_path / "b.pt", progress=False)
    assert a.losses == b.losses


def test_a_checkpoint_is_the_server_model(image_folder: Path, tmp_path: Path) -> None:
    model = build_model("lenet", num_classes=2, in_channels=3, image_size=(8, 8), seed=5)
    ckpt = save_checkpoint(model, tmp_path / "server.pt", model="lenet")
    config = _config(image_folder, checkpoint=ckpt, epochs=1, updates=8)
    train_inverter(config, tmp_path / "inv.pt", progress=False)
    inv = load_inverter(tmp_path / "inv.pt")
    assert inv.fingerprint == model_fingerprint(model)
    assert inv.auxiliary["checkpoint"] == str(ckpt)


def test_batches_and_fedavg_are_trained_for(image_folder: Path, tmp_path: Path) -> None:
    config = _config(
        image_folder, batch_size=2, protocol="fedavg", local_steps=2, local_lr=0.05, epochs=2
    )
    result = train_inverter(config, tmp_path / "inv.pt", progress=False)
    inv = load_inverter(tmp_path / "inv.pt")
    assert inv.batch_size == 2 and inv.update_kind.value == "weight_delta"
    assert inv.protocol["local_training"] == {
        "lr": 0.05,
        "steps": 2,
        "epochs": None,
        "batch_size": None,
    }
    assert result.losses[-1] < result.first_loss  # type: ignore[operator]


def test_matched_mse_ignores_the_order_of_the_batch() -> None:
    targets = torch.randn(3, 4, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    shuffled = targets[:, torch.tensor([2, 0, 3, 1])]
    assert float(matched_mse(shuffled, targets)) == 0.0
    assert float(torch.nn.functional.mse_loss(shuffled, targets)) > 0.1
    # Batch 1 is the plain MSE.
    assert float(matched_mse(targets[:, :1] + 1, targets[:, :1])) == pytest.approx(1.0)


def test_augmentation_moves_pixels_without_changing_them() -> None:
    pixels = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    out = augment(pixels, torch.Generator().manual_seed(1))
    assert out.shape == pixels.shape and not torch.equal(out, pixels)
    values = set(pixels.flatten().tolist())
    assert set(out.flatten().tolist()) <= values


def test_ctrl_c_keeps_the_last_completed_epoch(
    image_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out" / "inv.pt"
    steps = itertools.count(1)
    real_step = torch.optim.Adam.step

    def step_or_interrupt(self: torch.optim.Adam, *args: object, **kwargs: object) -> object:
        if next(steps) == 5:  # two steps per epoch: the middle of epoch 3
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", step_or_interrupt)
    result = train_inverter(_config(image_folder), out, progress=False)
    assert result.interrupted and len(result.losses) == 2
    kept = load_inverter(out)
    assert kept.epochs == 2
    assert result.inverter is not None and result.inverter.epochs == 2
    assert torch.equal(result.inverter.net.body[0].weight, kept.net.body[0].weight)
    assert sorted(p.name for p in out.parent.iterdir()) == ["inv.pt"]  # no partial file


def test_ctrl_c_while_generating_writes_nothing(
    image_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupt(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "simulate", interrupt)
    result = train_inverter(_config(image_folder), tmp_path / "inv.pt", progress=False)
    assert result.interrupted and result.inverter is None and result.losses == []
    assert not (tmp_path / "inv.pt").exists()


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"range": (0, 8)}, "range 0-8 goes past the folder test split, which has 8 images"),
        ({"batch_size": 9}, "batch size 9 is larger than the 8 auxiliary images"),
        ({"protocol": "fedadmm"}, "--protocol fedadmm is not supported"),
        ({"protocol": "fedprox"}, "protocol 'fedprox' is not one of"),
        ({"local_steps": 2}, "use --protocol fedavg"),
        ({"model": "vgg"}, "unknown model 'vgg'"),
        ({"data_root": None}, "pass --data-root DIR"),
        ({"epochs": 0}, "epochs must be an integer of at least 1"),
        ({"lr": -1.0}, "lr must be a positive number"),
        ({"dataset": "cifar10", "image_size": 8}, "drop --image-size"),
    ],
)
def test_bad_settings_are_refused_before_any_work(
    image_folder: Path, tmp_path: Path, changes: dict[str, object], fragment: str
) -> None:
    with pytest.raises(GradleakError, match=fragment):
        train_inverter(_config(image_folder, **changes), tmp_path / "inv.pt", progress=False)
    assert not (tmp_path / "inv.pt").exists()


def test_an_existing_out_is_replaced_only_on_request(image_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "inv.pt"
    out.write_bytes(b"earlier")
    with pytest.raises(GradleakError, match="already exists; add --overwrite"):
        train_inverter(_config(image_folder), out, progress=False)
    assert out.read_bytes() == b"earlier"
    train_inverter(_config(image_folder, epochs=1, updates=8), out, progress=False, overwrite=True)
    assert load_inverter(out).epochs == 1
    with pytest.raises(GradleakError, match="must name an inverter file ending in .pt"):
        train_inverter(_config(image_folder), tmp_path / "inv.txt", progress=False)


def test_an_inverter_from_other_images_serves_the_victims_model(
    image_folder: Path, tmp_path: Path
) -> None:
    from gradleak import attacks
    from gradleak.fl import FedSGDClient
    from gradleak.scenario import RunConfig, build_case

    out = tmp_path / "inv.pt"
    config = _config(image_folder, image_size=32, victim_dataset="cifar10", epochs=1)
    train_inverter(config, out, progress=False)
    inverter = load_inverter(out)
    case = build_case(RunConfig(model="lenet", indices=(0,), progress=False))  # CIFAR-10
    assert inverter.fingerprint == model_fingerprint(case.server.model)
    assert inverter.mean == case.server.knowledge.mean
    update = FedSGDClient(case.server.model).compute_update(case.client.batch)
    rec = attacks.get(f"learned:{out}").reconstruct(
        update, case.server.model, case.server.knowledge
    )
    assert rec.images.shape == case.client.batch.images.shape


def test_a_victim_dataset_of_another_image_shape_is_refused(
    image_folder: Path, tmp_path: Path
) -> None:
    config = _config(image_folder, image_size=32, victim_dataset="mnist")
    with pytest.raises(GradleakError, match="--victim-dataset mnist takes 1×28×28 images"):
        train_inverter(config, tmp_path / "inv.pt", progress=False)
