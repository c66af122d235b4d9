"""Generative priors: the generator's shapes, the prior file's round trip and refusals, the
shape check and the nearest training image."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from gradleak.attacks.priors.generative import (
    FORMAT,
    GENERATIVE_KINDS,
    Discriminator,
    Encoder,
    GenerativePrior,
    Generator,
    load_generative_prior,
    save_generative_prior,
)
from gradleak.core.errors import GradleakError
from gradleak.models import build_model, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


def _prior(
    channels: int = 3, size: int = 8, latent_dim: int = 6, images: int = 5, seed: int = 0
) -> GenerativePrior:
    torch.manual_seed(seed)
    generator = Generator(latent_dim, channels, size, width=8)
    kept = torch.randint(0, 256, (images, channels, size, size), dtype=torch.uint8)
    return GenerativePrior(
        kind="vae",
        generator=generator,
        latent_dim=latent_dim,
        data_shape=(channels, size, size),
        dataset="folder noise 0-4",
        training_images=kept,
        epochs=3,
        mean=(0.5,) * channels,
        std=(0.25,) * channels,
    )


def _one_line(error: pytest.ExceptionInfo[GradleakError]) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


# --- the networks ----------------------------------------------------------------------------


@pytest.mark.parametrize(("channels", "size"), [(1, 28), (3, 32), (3, 8)])
def test_generator_makes_pixels_of_the_asked_shape(channels: int, size: int) -> None:
    generator = Generator(16, channels, size)
    with torch.no_grad():
        images = generator(torch.randn(5, 16) * 10)  # large codes: the sigmoid bounds them
    assert images.shape == (5, channels, size, size)
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    # Any leading shape: trials × batch codes give trials × batch images.
    assert generator(torch.randn(2, 3, 16)).shape == (2, 3, channels, size, size)
    # Small enough to train on a CPU in minutes.
    assert sum(p.numel() for p in generator.parameters()) < 1_000_000


@pytest.mark.parametrize("size", [30, 6, 2, 0])
def test_a_side_that_is_no_multiple_of_four_is_refused(size: int) -> None:
    with pytest.raises(GradleakError, match="multiple of 4") as error:
        Generator(8, 3, size)
    _one_line(error)
    with pytest.raises(GradleakError, match="multiple of 4"):
        Encoder(8, 3, size)
    with pytest.raises(GradleakError, match="multiple of 4"):
        Discriminator(3, size)


def test_other_channel_counts_are_refused() -> None:
    with pytest.raises(GradleakError, match="1- or 3-channel"):
        Generator(8, 2, 8)


def test_the_generator_never_couples_the_images_of_a_batch() -> None:
    # No batch statistics: each image depends only on its own code, in train mode too.
    generator = Generator(6, 3, 8, width=8).train()
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in generator.modules())
    z = torch.randn(4, 6)
    together = generator(z)
    alone = torch.cat([generator(z[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(together, alone)


def test_the_generator_runs_under_vmap_with_a_copy_of_its_weights_per_trial() -> None:
    # What a generator fine-tuning attack does: one weight set and one code per trial.
    copies = [Generator(6, 3, 8, width=8) for _ in range(3)]
    params, buffers = stack_module_state(copies)
    z = torch.randn(3, 2, 6)

    def run(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], codes: torch.Tensor):
        return functional_call(copies[0], (p, b), (codes,))

    stacked = vmap(run)(params, buffers, z)
    looped = torch.stack([copies[t](z[t]) for t in range(3)])
    torch.testing.assert_close(stacked, looped)


def test_encoder_and_discriminator_shapes() -> None:
    x = torch.rand(4, 1, 28, 28)
    mean, logvar = Encoder(10, 1, 28, width=8)(x)
    assert mean.shape == logvar.shape == (4, 10)
    assert Discriminator(1, 28, width=8)(x).shape == (4,)


# --- the prior ---------------------------------------------------------------------------------


def test_latents_and_samples_follow_the_random_stream() -> None:
    prior = _prior()
    z = prior.latents(4, torch.Generator().manual_seed(1))
    assert z.shape == (4, 6)
    assert prior.latents((2, 3), torch.Generator().manual_seed(1)).shape == (2, 3, 6)
    torch.testing.assert_close(z, torch.randn(4, 6, generator=torch.Generator().manual_seed(1)))
    a = prior.sample(4, torch.Generator().manual_seed(2))
    b = prior.sample(4, torch.Generator().manual_seed(2))
    assert a.shape == (4, 3, 8, 8) and torch.equal(a, b)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0


def test_a_prior_holds_its_generator_frozen_in_eval_mode() -> None:
    prior = _prior()
    assert not prior.generator.training
    assert not any(p.requires_grad for p in prior.generator.parameters())


def test_save_and_load_restore_the_same_generator(tmp_path: Path) -> None:
    prior = _prior(channels=1, size=12)
    path = save_generative_prior(prior, tmp_path / "sub" / "prior.pt", seed=4)
    loaded = load_generative_prior(path)
    z = prior.latents(3, torch.Generator().manual_seed(0))
    assert torch.equal(loaded.generator(z), prior.generator(z))
    assert (loaded.kind, loaded.latent_dim, loaded.data_shape) == ("vae", 6, (1, 12, 12))
    assert (loaded.dataset, loaded.epochs, loaded.path) == (prior.dataset, 3, str(path))
    assert loaded.generator.width == 8
    assert torch.equal(loaded.training_images, prior.training_images)
    assert loaded.mean == (0.5,) and loaded.std == (0.25,)
    assert not loaded.generator.training
    assert not any(p.requires_grad for p in loaded.generator.parameters())
    # Only tensors and plain values: it reads back with torch's safe loader.
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == FORMAT and payload["version"] == 1 and payload["seed"] == 4
    # Written whole: no partial file is left beside it.
    assert sorted(p.name for p in path.parent.iterdir()) == ["prior.pt"]


def test_the_file_keeps_at_most_the_first_two_thousand_training_images(tmp_path: Path) -> None:
    prior = _prior(channels=1, size=4, images=2_003)
    loaded = load_generative_prior(save_generative_prior(prior, tmp_path / "p.pt"))
    assert torch.equal(loaded.training_images, prior.training_images[:2_000])


def _refusal(path: Path) -> str:
    with pytest.raises(GradleakError) as error:
        load_generative_prior(path)
    message = _one_line(error)
    assert str(path) in message
    return message


def test_load_refuses_a_missing_file_or_a_folder(tmp_path: Path) -> None:
    assert "not found" in _refusal(tmp_path / "absent.pt")
    assert "train-prior" in _refusal(tmp_path / "absent.pt")
    assert "folder" in _refusal(tmp_path)


def test_load_refuses_a_model_checkpoint(tmp_path: Path) -> None:
    path = save_checkpoint(build_model("lenet", num_classes=10, seed=0), tmp_path / "m.pt")
    message = _refusal(path)
    assert "model checkpoint" in message and "not a generative prior" in message
    assert "gradleak train-prior --kind vae" in message


def test_load_refuses_garbage_other_torch_files_and_newer_versions(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00\x01not a torch file" * 10)
    assert "not a generative prior" in _refusal(garbage)

    other = tmp_path / "inverter.pt"
    torch.save({"format": "gradleak-inverter", "version": 1}, other)
    assert "gradleak-inverter file, not a generative prior" in _refusal(other)

    bare = tmp_path / "bare.pt"
    torch.save(torch.zeros(3), bare)
    assert "not a generative prior" in _refusal(bare)

    newer = tmp_path / "newer.pt"
    path = save_generative_prior(_prior(), newer)
    payload = torch.load(path, weights_only=True)
    torch.save({**payload, "version": 2}, newer)
    assert "newer" in _refusal(newer)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"kind": "flow"}, "kind"),
        ({"data_shape": [3, 8]}, "data_shape"),
        ({"data_shape": [3, 10, 10]}, "multiple of 4"),
        ({"latent_dim": 7}, "project.weight"),
        ({"state": {"x": torch.zeros(1)}}, "do not fit"),
        ({"training_images": torch.zeros(2, 3, 8, 8)}, "training_images"),
    ],
)
def test_load_refuses_a_damaged_prior(tmp_path: Path, change: dict, named: str) -> None:
    path = save_generative_prior(_prior(), tmp_path / "p.pt")
    payload = torch.load(path, weights_only=True)
    torch.save({**payload, **change}, path)
    message = _refusal(path)
    assert "damaged" in message and named in message


def test_load_refuses_non_finite_weights(tmp_path: Path) -> None:
    path = save_generative_prior(_prior(), tmp_path / "p.pt")
    payload = torch.load(path, weights_only=True)
    payload["state"]["project.weight"][0, 0] = float("nan")
    torch.save(payload, path)
    assert "NaN" in _refusal(path)


def test_check_fits_refuses_another_shape_naming_what_it_was_trained_for(tmp_path: Path) -> None:
    prior = load_generative_prior(save_generative_prior(_prior(1, 28), tmp_path / "PRIOR.pt"))
    prior.check_fits((1, 28, 28), "attacked")
    with pytest.raises(GradleakError) as error:
        prior.check_fits((3, 32, 32), "attacked")
    message = _one_line(error)
    assert f"prior {tmp_path / 'PRIOR.pt'} was trained for 1×28×28 images" in message
    assert "(folder noise 0-4)" in message and "the attacked images are 3×32×32" in message
    assert "gradleak train-prior" in message and "--image-size 32" in message


def test_nearest_training_images_finds_each_training_image_itself() -> None:
    prior = _prior(images=6)
    kept = prior.training_images.float() / 255
    query = kept[[4, 1]]
    images, indices = prior.nearest_training_images(query)
    assert indices.tolist() == [4, 1]
    assert torch.equal(images, query)
    # A slightly changed image still finds the one it came from.
    moved = (kept[2:3] + 0.01 * torch.randn(1, 3, 8, 8)).clamp(0, 1)
    images, indices = prior.nearest_training_images(moved)
    assert indices.tolist() == [2] and torch.equal(images, kept[2:3])
    with pytest.raises(GradleakError, match="trained for 3×8×8"):
        prior.nearest_training_images(torch.rand(1, 1, 8, 8))


def test_every_kind_is_described_on_one_line() -> None:
    assert set(GENERATIVE_KINDS) == {"vae", "dcgan"}
    assert all("\n" not in text for text in GENERATIVE_KINDS.values())
