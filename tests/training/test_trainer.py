"""`gradleak train`: SGD training, saved states, Ctrl-C, bad input and the subcommand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from gradleak.cli import app as cli
from gradleak.core.errors import GradleakError
from gradleak.data import PHOTO_STATS, load_dataset, normalize
from gradleak.models import build_model, load_checkpoint, read_checkpoint_metadata
from gradleak.training.trainer import TrainConfig, epoch_checkpoint_path, history_path, train_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def folder(image_folder: Path) -> Path:
    """The shared noise-image folder (tests/conftest.py)."""
    return image_folder


def _folder_config(root: Path, **changes: object) -> TrainConfig:
    settings: dict[str, object] = {
        "model": "lenet",
        "dataset": "folder",
        "data_root": root,
        "train_range": (0, 5),
        "test_range": (6, 7),
        "batch_size": 3,
    }
    settings.update(changes)
    return TrainConfig(**settings)  # type: ignore[arg-type]


def _states_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _fresh(name: str, classes: int, channels: int = 3, size: int = 32) -> torch.nn.Module:
    return build_model(
        name, num_classes=classes, in_channels=channels, image_size=(size, size), seed=7
    )


def test_lenet_learns_mnist_and_its_states_load_back(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "ckpt" / "lenet-mnist.pt"
    config = TrainConfig(
        model="lenet",
        dataset="mnist",
        data_root=shared_data,
        train_range=(100, 899),
        test_range=(9000, 9999),
        epochs=2,
        batch_size=16,
        save_epochs=(0, 1),
    )
    result = train_model(config, out, progress=False)
    assert not result.interrupted
    assert [c.epoch for c in result.checkpoints] == [0, 1, 2]
    untrained, final = result.checkpoints[0], result.final
    assert final is not None and final.path == out
    # Chance is 0.1: the untrained net is near it, two epochs on 800 digits are far above.
    assert untrained.heldout_accuracy is not None and untrained.heldout_accuracy < 0.2
    assert final.heldout_accuracy is not None and final.heldout_accuracy > 0.4

    # The final file is the trained model; epoch 0 is exactly the model an attack builds
    # from the same seed without a checkpoint (the "untrained" state).
    trained = load_checkpoint(_fresh("lenet", 10, 1, 28), out)
    assert _states_equal(trained.state_dict(), result.model.state_dict())
    initial = load_checkpoint(_fresh("lenet", 10, 1, 28), epoch_checkpoint_path(out, 0))
    seeded = build_model("lenet", num_classes=10, in_channels=1, image_size=(28, 28), seed=0)
    assert _states_equal(initial.state_dict(), seeded.state_dict())
    after_one = load_checkpoint(_fresh("lenet", 10, 1, 28), epoch_checkpoint_path(out, 1))
    assert not _states_equal(after_one.state_dict(), trained.state_dict())

    metadata = read_checkpoint_metadata(out)
    assert metadata["model"] == "lenet" and metadata["dataset"] == "mnist"
    assert (metadata["num_classes"], metadata["in_channels"]) == (10, 1)
    assert metadata["image_size"] == [28, 28]
    assert (metadata["epoch"], metadata["seed"]) == (2, 0)
    assert metadata["train_range"] == [100, 899] and metadata["test_range"] == [9000, 9999]
    assert metadata["heldout_accuracy"] == final.heldout_accuracy
    assert metadata["train_accuracy"] == result.history[-1].train_accuracy
    assert metadata["interrupted"] is False

    history = json.loads(history_path(out).read_text())
    assert [e["epoch"] for e in history["epochs"]] == [1, 2]
    assert history["epochs"][-1]["heldout_accuracy"] == final.heldout_accuracy
    assert (history["train_images"], history["heldout_images"]) == (800, 1000)


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_one_full_batch_epoch_is_one_plain_sgd_step(folder: Path, weight_decay: float) -> None:
    config = _folder_config(
        folder, train_range=(0, 7), test_range=None, batch_size=8, weight_decay=weight_decay
    )
    result = train_model(config, folder.parent / "out.pt", progress=False)
    # The same step by hand: w - lr * (∇ mean cross-entropy + wd * w), on normalised images.
    source = load_dataset("folder", folder, size=(32, 32), channels=3)
    images = torch.stack([source[i][0] for i in range(8)])
    labels = torch.tensor([source[i][1] for i in range(8)])
    model = build_model("lenet", num_classes=2, seed=0)
    x = normalize(images, PHOTO_STATS.mean, PHOTO_STATS.std)
    loss = F.cross_entropy(model(x), labels)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    trained = dict(result.model.named_parameters())
    for (name, w), g in zip(model.named_parameters(), grads, strict=True):
        expected = w - config.lr * (g + weight_decay * w)
        torch.testing.assert_close(trained[name].detach(), expected.detach())
    assert result.history[0].loss == pytest.approx(float(loss.detach()), rel=1e-5)
    assert result.history[0].heldout_accuracy is None


def test_batch_norm_statistics_are_saved(folder: Path) -> None:
    out = folder.parent / "resnet.pt"
    result = train_model(_folder_config(folder, model="resnet20"), out, progress=False)
    untrained = _fresh("resnet20", 2).state_dict()
    saved = torch.load(out, weights_only=True)["state_dict"]
    # Training in train mode moved the running statistics; the checkpoint keeps them.
    assert not torch.equal(saved["bn1.running_mean"], untrained["bn1.running_mean"])
    assert int(saved["bn1.num_batches_tracked"]) == 2  # 6 images in batches of 3
    loaded = load_checkpoint(_fresh("resnet20", 2), out)
    assert _states_equal(loaded.state_dict(), result.model.state_dict())


def test_same_seed_gives_the_same_weights(folder: Path) -> None:
    a = train_model(_folder_config(folder, epochs=2), folder.parent / "a.pt", progress=False)
    b = train_model(_folder_config(folder, epochs=2), folder.parent / "b.pt", progress=False)
    c = train_model(
        _folder_config(folder, epochs=2, seed=1), folder.parent / "c.pt", progress=False
    )
    assert _states_equal(a.model.state_dict(), b.model.state_dict())
    assert not _states_equal(a.model.state_dict(), c.model.state_dict())


def _interrupt_at_step(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    """Make the `step`-th optimiser step (1-based) raise KeyboardInterrupt, as Ctrl-C would."""
    calls = {"n": 0}
    original = torch.optim.SGD.step

    def step_or_interrupt(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == step:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", step_or_interrupt)


def test_ctrl_c_saves_the_last_completed_epoch(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = folder.parent / "run.pt"
    _interrupt_at_step(monkeypatch, 4)  # two steps per epoch: the middle of epoch 2
    config = _folder_config(folder, epochs=3, save_epochs=(1,))
    result = train_model(config, out, progress=False)
    assert result.interrupted
    assert [r.epoch for r in result.history] == [1]
    assert result.final is not None and result.final.epoch == 1
    epoch1 = torch.load(epoch_checkpoint_path(out, 1), weights_only=True)["state_dict"]
    final = torch.load(out, weights_only=True)
    # Not the half-trained weights of epoch 2: exactly the state after epoch 1.
    assert _states_equal(final["state_dict"], epoch1)
    assert final["metadata"]["interrupted"] is True and final["metadata"]["epoch"] == 1
    assert json.loads(history_path(out).read_text())["interrupted"] is True


def test_ctrl_c_in_the_first_epoch_saves_no_final_state(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = folder.parent / "run.pt"
    _interrupt_at_step(monkeypatch, 1)
    result = train_model(_folder_config(folder), out, progress=False)
    assert result.interrupted and result.final is None and not out.exists()
    assert history_path(out).is_file()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"model": "lenot"}, "unknown model 'lenot'"),
        ({"dataset": "svhn"}, "unknown dataset 'svhn'"),
        ({"data_root": None}, "pass --data-root"),
        ({"epochs": 0}, "epochs must be an integer of at least 1"),
        ({"batch_size": 7}, "batch size 7 is larger than the 6 training images"),
        ({"save_epochs": (1, 2)}, "save epoch 2 is outside 0..1"),
        ({"test_range": (5, 7)}, "train range 0-5 overlaps the held-out range 5-7"),
        ({"train_range": (3, 2)}, "train range 3-2 is not A-B"),
        ({"lr": 0.0}, "lr must be a positive number"),
        ({"momentum": 1.0}, r"momentum must be in \[0, 1\)"),
        ({"dataset": "mnist", "image_size": 32}, "mnist images are 28 pixels"),
        ({"seed": -1}, r"seed must be an integer in 0..2\*\*63-1"),
        ({"seed": 2**70}, r"seed must be an integer in 0..2\*\*63-1"),
    ],
)
def test_bad_settings_are_one_line_errors(
    folder: Path, changes: dict[str, object], message: str
) -> None:
    with pytest.raises(GradleakError, match=message) as info:
        train_model(_folder_config(folder, **changes), folder.parent / "x.pt", progress=False)
    assert "\n" not in str(info.value)
    assert not (folder.parent / "x.pt").exists()


def test_ranges_must_lie_in_the_dataset(folder: Path) -> None:
    config = _folder_config(folder, train_range=(0, 5), test_range=(6, 8))
    with pytest.raises(GradleakError, match="test range 6-8 goes past .* which has 8 images"):
        train_model(config, folder.parent / "x.pt", progress=False)


@pytest.mark.parametrize("out", ["ckpt", "ckpt.json"])
def test_out_must_be_a_checkpoint_file(folder: Path, out: str) -> None:
    with pytest.raises(GradleakError, match="must name a checkpoint file ending in .pt"):
        train_model(_folder_config(folder), folder.parent / out, progress=False)


def _main_with_train(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    """`gradleak ARGV` through gradleak.cli.main."""
    return cli.main(argv)


def _train_argv(folder: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--model",
        "lenet",
        "--dataset",
        "folder",
        "--data-root",
        str(folder),
        "--train-range",
        "0-5",
        "--test-range",
        "6-7",
        "--batch-size",
        "3",
        "--out",
        str(out),
        "--threads",
        "1",
        "--no-progress",
        *extra,
    ]


def test_cli_trains_and_prints_one_line_per_checkpoint(
    folder: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = folder.parent / "cli" / "lenet.pt"
    argv = _train_argv(folder, out, "--epochs", "2", "--save-epochs", "0,1")
    assert _main_with_train(argv, monkeypatch) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"saved {epoch_checkpoint_path(out, 0)} (untrained)")
    assert lines[1].startswith(f"saved {epoch_checkpoint_path(out, 1)} (epoch 1)")
    assert lines[2].startswith(f"saved {out} (epoch 2): train accuracy ")
    assert "held-out accuracy" in lines[2] and lines[3].startswith("history written to")
    assert read_checkpoint_metadata(out)["epoch"] == 2


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--train-range", "5-1"], "argument --train-range: range '5-1' ends before it starts"),
        (["--save-epochs", "1,x"], "argument --save-epochs: '1,x' is not a comma-separated"),
        (["--epochs", "1", "--save-epochs", "3"], "save epoch 3 is outside 0..1"),
        (["--threads", "0"], "--threads must be at least 1"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(
    folder: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    argv = _train_argv(folder, folder.parent / "x.pt", *extra)
    with pytest.raises(SystemExit) as exit_info:  # argparse's own errors exit directly
        raise SystemExit(_main_with_train(argv, monkeypatch))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_cli_ctrl_c_exits_130(
    folder: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = folder.parent / "stop.pt"
    _interrupt_at_step(monkeypatch, 3)  # the first step of epoch 2
    assert _main_with_train(_train_argv(folder, out, "--epochs", "2"), monkeypatch) == 130
    assert f"interrupted: epoch 1 saved to {out}" in capsys.readouterr().err
    assert read_checkpoint_metadata(out)["epoch"] == 1
