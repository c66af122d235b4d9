"""Training generative priors: loss goes down, the file is the returned prior, Ctrl-C keeps
the last epoch, defaults keep the attacked images out, bad settings fail before work."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import gradleak.attacks.priors.generative as networks
import gradleak.training.generative as training
from gradleak.attacks.priors.generative import GENERATIVE_KINDS, load_generative_prior
from gradleak.core.errors import GradleakError
from gradleak.data import open_images
from gradleak.training.auxiliary import AUXILIARY_RANGE
from gradleak.training.generative import (
    PriorTrainConfig,
    samples_path,
    train_generative_prior,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def squares(tmp_path: Path) -> Path:
    """16 images 8×8 of a bright square at a random place on a dark background: a set a
    generator can learn in a few dozen steps, far from the grey an untrained one makes."""
    rng = np.random.default_rng(0)
    root = tmp_path / "squares"
    (root / "a").mkdir(parents=True)
    for i in range(16):
        pixels = np.full((8, 8, 3), 20, dtype=np.uint8)
        r, c = rng.integers(0, 4, 2)
        pixels[r : r + 4, c : c + 4] = (230, 200, 40)
        Image.fromarray(pixels).save(root / "a" / f"{i}.png")
    return root


def _config(root: Path, **changes: object) -> PriorTrainConfig:
    settings: dict[str, object] = {
        "dataset": "folder",
        "data_root": root,
        "image_size": 8,
        "latent_dim": 4,
        "width": 8,
        "epochs": 2,
        "batch_size": 4,
    }
    settings.update(changes)
    return PriorTrainConfig(**settings)  # type: ignore[arg-type]


def _distance_to_training(prior: networks.GenerativePrior) -> float:
    """Mean squared error of 32 samples to their nearest training images."""
    samples = prior.sample(32, torch.Generator().manual_seed(5))
    nearest, _ = prior.nearest_training_images(samples)
    return float((samples - nearest).square().mean())


def _untrained(
    trained: networks.GenerativePrior, config: PriorTrainConfig
) -> networks.GenerativePrior:
    """The prior before training: the generator as initialised from the seed."""
    torch.manual_seed(config.seed)
    generator = networks.Generator(config.latent_dim, 3, 8, config.width)
    return networks.GenerativePrior(
        kind=config.kind,
        generator=generator,
        latent_dim=config.latent_dim,
        data_shape=(3, 8, 8),
        dataset="untrained",
        training_images=trained.training_images,
        epochs=0,
    )


@pytest.mark.parametrize(("kind", "epochs", "lr"), [("vae", 8, 1e-2), ("dcgan", 12, 2e-3)])
def test_training_brings_the_samples_to_the_training_images(
    squares: Path, tmp_path: Path, kind: str, epochs: int, lr: float
) -> None:
    config = _config(squares, kind=kind, epochs=epochs, lr=lr)
    result = train_generative_prior(config, tmp_path / "p.pt", progress=False)
    assert not result.interrupted and len(result.losses) == epochs
    before = _distance_to_training(_untrained(result.prior, config))
    after = _distance_to_training(result.prior)
    assert after < 0.5 * before, (before, after)
    if kind == "vae":
        # The negative ELBO it minimises goes down.
        assert result.losses[-1].loss < 0.9 * result.losses[0].loss
        assert set(result.losses[0].terms) == {"reconstruction", "kl"}
    else:
        assert set(result.losses[0].terms) == {"discriminator", "generator"}


def test_the_saved_file_is_the_returned_prior(squares: Path, tmp_path: Path) -> None:
    out = tmp_path / "priors" / "p.pt"
    seen: list[int] = []
    result = train_generative_prior(
        _config(squares, index_range=(2, 13)),
        out,
        progress=False,
        on_epoch=lambda e: seen.append(e.epoch),
    )
    assert seen == [1, 2] and result.path == out and result.samples_path == samples_path(out)
    assert Image.open(samples_path(out)).size[0] > 0
    loaded = load_generative_prior(out)
    z = loaded.latents(4, torch.Generator().manual_seed(0))
    assert torch.equal(loaded.generator(z), result.prior.generator(z))
    assert (loaded.kind, loaded.data_shape, loaded.epochs) == ("vae", (3, 8, 8), 2)
    assert loaded.dataset == f"folder {squares} 2-13, flipped"
    pixels, _ = open_images("folder", squares, image_size=8).pixels(range(2, 14))
    assert torch.equal(loaded.training_images, (pixels * 255).round().to(torch.uint8))
    payload = torch.load(out, weights_only=True)
    assert payload["index_range"] == [2, 13] and payload["interrupted"] is False
    assert payload["losses"] == [e.loss for e in result.losses]
    assert not result.prior.generator.training


def test_the_same_seed_trains_the_same_prior(image_folder: Path, tmp_path: Path) -> None:
    def train(seed: int, name: str) -> training.PriorTrainResult:
        config = _config(image_folder, kind="dcgan", seed=seed)
        return train_generative_prior(config, tmp_path / name, progress=False)

    a, b, c = train(3, "a.pt"), train(3, "b.pt"), train(4, "c.pt")
    state_a, state_b = a.prior.generator.state_dict(), b.prior.generator.state_dict()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert [e.loss for e in a.losses] == [e.loss for e in b.losses]
    assert not torch.equal(
        state_a["project.weight"], c.prior.generator.state_dict()["project.weight"]
    )


def test_the_kept_training_images_are_capped(
    image_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(training, "MAX_KEPT_IMAGES", 3)
    monkeypatch.setattr(networks, "MAX_KEPT_IMAGES", 3)
    result = train_generative_prior(
        _config(image_folder, epochs=1), tmp_path / "p.pt", progress=False
    )
    pixels, _ = open_images("folder", image_folder, image_size=8).pixels(range(3))
    assert torch.equal(
        load_generative_prior(result.path).training_images, (pixels * 255).round().to(torch.uint8)
    )


def _interrupt_at_step(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    """Make the `step`-th Adam step (1-based) raise KeyboardInterrupt, as Ctrl-C would."""
    original = torch.optim.Adam.step
    count = {"n": 0}

    def step_or_interrupt(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        count["n"] += 1
        if count["n"] == step:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", step_or_interrupt)


def test_ctrl_c_keeps_the_last_completed_epoch(
    image_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "p.pt"
    _interrupt_at_step(monkeypatch, 3)  # two steps per epoch: the first of epoch 2
    saved: dict[str, torch.Tensor] = {}

    def keep(_: object) -> None:
        saved.update(
            {k: v.clone() for k, v in load_generative_prior(out).generator.state_dict().items()}
        )

    result = train_generative_prior(
        _config(image_folder, epochs=3), out, progress=False, on_epoch=keep
    )
    assert result.interrupted and len(result.losses) == 1 and result.path == out
    loaded = load_generative_prior(out)
    assert loaded.epochs == 1 and result.prior.epochs == 1
    state = result.prior.generator.state_dict()
    assert all(torch.equal(saved[k], state[k]) for k in state)
    assert all(torch.equal(loaded.generator.state_dict()[k], state[k]) for k in state)
    assert torch.load(out, weights_only=True)["interrupted"] is True


def test_ctrl_c_before_the_first_epoch_ends_saves_nothing(
    image_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _interrupt_at_step(monkeypatch, 1)
    result = train_generative_prior(_config(image_folder), tmp_path / "p.pt", progress=False)
    assert result.interrupted and result.path is None and result.losses == []
    assert not (tmp_path / "p.pt").exists() and not samples_path(tmp_path / "p.pt").exists()


def test_an_existing_prior_is_replaced_only_when_asked(image_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.pt"
    out.write_bytes(b"earlier")
    with pytest.raises(GradleakError, match="--overwrite") as error:
        train_generative_prior(_config(image_folder), out, progress=False)
    assert "\n" not in str(error.value)
    assert out.read_bytes() == b"earlier"
    train_generative_prior(_config(image_folder, epochs=1), out, progress=False, overwrite=True)
    assert load_generative_prior(out).epochs == 1


def test_a_stale_samples_picture_is_refused_too(image_folder: Path, tmp_path: Path) -> None:
    samples_path(tmp_path / "p.pt").write_bytes(b"png")
    with pytest.raises(GradleakError, match="p.samples.png already exists"):
        train_generative_prior(_config(image_folder), tmp_path / "p.pt", progress=False)


def test_defaults_keep_the_attacked_images_out() -> None:
    # The indexed datasets' first 100 images are the attacked ones by convention.
    for dataset in ("cifar10", "cifar100", "mnist"):
        config = PriorTrainConfig(dataset=dataset, data_root=Path("x"))
        assert config.resolved_range(600) == AUXILIARY_RANGE == (100, 599)
        assert config.resolved_range(10_000) == (100, 599)
    assert _config(Path("x"), index_range=None).resolved_range(60) == (0, 59)
    assert PriorTrainConfig().kind == "vae" and PriorTrainConfig().resolved_lr == 1e-3
    assert PriorTrainConfig().flips and not PriorTrainConfig(dataset="mnist").flips
    assert PriorTrainConfig(dataset="mnist", augment=True).flips
    # 800 steps by default, whatever the number of images.
    assert PriorTrainConfig().resolved_epochs(500) == 100
    assert PriorTrainConfig().resolved_epochs(60) == 800
    assert PriorTrainConfig(epochs=3).resolved_epochs(60) == 3
    assert PriorTrainConfig(kind="dcgan").resolved_lr == 2e-4


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"kind": "flow"}, "unknown prior kind 'flow'; choose one of: vae, dcgan"),
        ({"dataset": "svhn"}, "unknown dataset 'svhn'"),
        ({"data_root": None}, "--data-root"),
        ({"image_size": 30}, "--image-size 28 or 32"),
        ({"dataset": "mnist", "image_size": 28}, "drop --image-size"),
        ({"epochs": 0}, "epochs must be an integer of at least 1"),
        ({"batch_size": 0}, "batch_size must be"),
        ({"latent_dim": 0}, "latent_dim must be"),
        ({"lr": -1.0}, "lr must be a positive number"),
        ({"kl_weight": float("nan")}, "kl_weight must be 0 or more"),
        ({"seed": -1}, "seed must be"),
        ({"split": "val"}, "unknown split"),
        ({"index_range": (5, 2)}, "range 5-2 is not A-B"),
    ],
)
def test_bad_settings_are_refused_in_one_line(changes: dict, message: str) -> None:
    with pytest.raises(GradleakError) as error:
        _config(Path("unused"), **changes).validate()
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_range_past_the_images_is_refused_before_training(
    image_folder: Path, tmp_path: Path
) -> None:
    with pytest.raises(GradleakError, match="goes past the folder, which has 8 images"):
        train_generative_prior(_config(image_folder, index_range=(0, 20)), tmp_path / "p.pt")
    assert not (tmp_path / "p.pt").exists()


def test_out_must_name_a_prior_file(image_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(GradleakError, match="ending in .pt or .pth"):
        train_generative_prior(_config(image_folder), tmp_path / "p.txt")
    with pytest.raises(GradleakError, match="is a folder"):
        (tmp_path / "d.pt").mkdir()
        train_generative_prior(_config(image_folder), tmp_path / "d.pt")


def test_a_vae_on_real_cifar_images(shared_data: Path, tmp_path: Path) -> None:
    config = PriorTrainConfig(
        dataset="cifar10", data_root=shared_data, index_range=(100, 131), epochs=1, width=16
    )
    result = train_generative_prior(config, tmp_path / "cifar.pt", progress=False)
    prior = load_generative_prior(result.path)
    assert prior.data_shape == (3, 32, 32)
    assert prior.dataset == "cifar10 test split 100-131, flipped"
    pixels, _ = open_images("cifar10", shared_data).pixels(range(100, 132))
    assert torch.equal(prior.training_images, (pixels * 255).round().to(torch.uint8))
    prior.check_fits((3, 32, 32), "attacked")


def test_every_kind_has_its_training() -> None:
    assert set(training._BUILDERS) == set(training._KINDS) == set(GENERATIVE_KINDS)
